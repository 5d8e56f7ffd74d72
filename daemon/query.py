"""The query side: the seed's questions, answered from whatever the registry holds.

A registry narrows with what it can index (Consul: a filter expression on tags and meta);
``Query.matches`` then applies the exact semantics to the decoded declaration, so every
registry gives the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from discovery import codec
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

    def consul_filter(self) -> str:
        """A go-bexpr expression selecting a superset of the matches (never fewer).

        A term whose value cannot be quoted in go-bexpr (it has no escapes: a value with
        both ``"`` and a backtick) is left out; ``matches`` still applies it exactly.
        """
        terms = ['ServiceMeta["external-source"] == "capsync"']
        tools = [f"{q} in ServiceTags" for t in self.tools if (q := _quote(t))]
        if tools and len(tools) == len(self.tools):
            terms.append("(" + " or ".join(tools) + ")")
        terms += [f"{q} in ServiceTags" for tool in self.has if (q := _quote(tool))]
        terms += [f'ServiceMeta["{codec.FLAG_PREFIX}{flag}"] == "true"' for flag in self.flags]
        terms += [f"ServiceMeta[{k}] == {v}" for key, value in self.meta
                  if (k := _quote(key)) and (v := _quote(value))]
        # A minimal-form entry has no verified key (it is verified only without tools).
        if self.verified:
            terms.append(f'ServiceMeta["{codec.VERIFIED}"] != "false"')
        terms += [f"{q} in ServiceTags" for c, p in self.permissions
                  if (q := _quote(f"perm:{c}:{p}"))]
        return " and ".join(terms)


def _quote(text: str) -> str:
    """A go-bexpr string literal: double quotes, else backticks, else "" (cannot)."""
    if '"' not in text and "\\" not in text:
        return f'"{text}"'
    return f"`{text}`" if "`" not in text else ""
