"""The query side: the seed's questions, answered from whatever the registry holds.

Each registry narrows with what it can index, in its own module (Consul: a filter
expression on tags and meta; SQLite: SQL); ``Query.matches`` then applies the exact
semantics to the decoded declaration, so every registry gives the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from discovery.model import Capabilities


@dataclass(frozen=True)
class Query:
    """``--category C --tool T...``: has_capability(C, name in T).
    ``--has T...``: every T provided, by name or alternative.
    ``--flag F``: has_flag(F). ``--meta K=V``: metadata[K] == V.
    ``--all-required``: every required tool is among the named tools (--tool and --has).
    ``--verified``: the library's find_verified_workers (every tool live and attested).
    ``--permission C:P``: the library's find_workers_with_permissions(C, P).
    An expired or revoked tool provides nothing, judged at ``now`` (Unix seconds; the
    command passes the clock).
    """

    category: str | None = None
    tools: tuple[str, ...] = ()
    has: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    meta: tuple[tuple[str, str], ...] = ()
    all_required: bool = False
    verified: bool = False
    permissions: tuple[tuple[str, str], ...] = ()
    now: int = 0

    def matches(self, caps: Capabilities) -> bool:
        named = set(self.tools) | set(self.has)
        provided = set(caps.provided_tools(self.now))
        return (
            (self.category is None
             or caps.has_capability(self.category, self.tools.__contains__, now=self.now))
            and all(tool in provided for tool in self.has)
            and all(caps.has_flag(flag) for flag in self.flags)
            and all(caps.metadata.get(key) == value for key, value in self.meta)
            and (not self.all_required
                 or caps.has_all_required_tools(named.__contains__, now=self.now))
            and (not self.verified or caps.verify_all_capabilities(self.now))
            and all(caps.has_required_permissions(c, p) for c, p in self.permissions)
        )
