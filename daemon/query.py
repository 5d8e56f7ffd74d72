"""The query side: the seed's questions, answered from whatever the registry holds.

Each registry narrows with what it can index, in its own module (Consul: a filter
expression on tags and meta; SQLite: SQL); ``Query.matches`` then applies the exact
semantics to the decoded declaration, so every registry gives the same answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, Unpack

from config.errors import DeclarationError
from config.events import emit
from discovery import codec, full_entry, seed_json
from discovery.model import CATEGORIES, Capabilities
from discovery.tool_terms import PERMISSIONS
from discovery.wire import FindRequest

if TYPE_CHECKING:
    from daemon.registry.base import Listed, Registry

Decoded = tuple[str, codec.Entry, Capabilities]


class Asked(TypedDict):
    """A query as the user spelled it (``find``'s options, the API's parameters), before
    ``Query.of`` checks and reads it: ``meta`` as KEY=VALUE, ``permissions`` as
    CATEGORY:PERMISSION."""

    category: str | None
    tools: Sequence[str]
    has: Sequence[str]
    flags: Sequence[str]
    meta: Sequence[str]
    all_required: bool
    verified: NotRequired[bool]
    permissions: NotRequired[Sequence[str]]
    ignore_case: NotRequired[bool]
    healthy: NotRequired[bool]


@dataclass(frozen=True)
class Query:
    """``--category C --tool T...``: has_capability(C, name in T).
    ``--has T...``: every T provided, by name or alternative.
    ``--flag F``: has_flag(F). ``--meta K=V``: metadata[K] == V.
    ``--all-required``: every required tool is among the named tools (--tool and --has).
    ``--verified``: the library's find_verified_workers (every tool live and attested).
    ``--permission C:P``: the library's find_workers_with_permissions(C, P).
    An expired or revoked tool provides nothing, judged at ``now`` (Unix seconds; the
    command passes the clock). Names compare exactly, as in the library;
    ``ignore_case`` (capsync's extension, ``--ignore-case``) compares them case-folded.
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
    ignore_case: bool = False
    # capsync's extension (``--healthy``): passing workers only, by the health the
    # registry keeps beside each entry.
    healthy: bool = False

    @classmethod
    def seed_find(cls, request: FindRequest, now: int) -> Query:
        """The seed's FindRequest: find_with_capability(capability_type, tool in
        required_tools), the same question REST, gRPC and ``capsync find`` ask."""
        return cls(
            category=request.capability_type,
            tools=tuple(request.required_tools),
            now=now,
        )

    @classmethod
    def of(
        cls,
        *,
        now: int = 0,
        spell: Callable[[str], str] = lambda option: f"--{option}",
        **asked: Unpack[Asked],
    ) -> Query:
        """The query the user asked for (``find``'s options, the API's parameters);
        ValueError naming the option when it does not make sense, in the caller's own
        terms (``spell``: a CLI flag, a query parameter, a message field)."""
        category, tools, meta = asked["category"], asked["tools"], asked["meta"]
        if bool(category) != bool(tools):
            raise ValueError(f"{spell('category')} and {spell('tool')} go together")
        if category is not None and category not in CATEGORIES:
            raise ValueError(
                f"{spell('category')} {category!r}: expected one of {', '.join(CATEGORIES)}"
            )
        pairs = []
        for pair in meta:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise ValueError(f"{spell('meta')} {pair!r}: expected KEY=VALUE")
            pairs.append((key, value))
        held = []
        for pair in asked.get("permissions", ()):
            cat, _, permission = pair.partition(":")
            if cat not in CATEGORIES or permission not in PERMISSIONS:
                raise ValueError(
                    f"{spell('permission')} {pair!r}: expected CATEGORY:PERMISSION with "
                    f"CATEGORY one of {', '.join(CATEGORIES)} and PERMISSION "
                    f"one of {', '.join(PERMISSIONS)}"
                )
            held.append((cat, permission))
        return cls(
            category=category or None,
            tools=tuple(tools),
            has=tuple(asked["has"]),
            flags=tuple(asked["flags"]),
            meta=tuple(pairs),
            all_required=asked["all_required"],
            verified=asked.get("verified", False),
            permissions=tuple(held),
            now=now,
            ignore_case=asked.get("ignore_case", False),
            healthy=asked.get("healthy", False),
        )

    def narrowing(self) -> Query:
        """What a registry may narrow by: the registries index names exactly, so a
        case-insensitive query narrows by everything but its names."""
        if not self.ignore_case:
            return self
        return replace(self, category=None, tools=(), has=(), all_required=False)

    def keeps(self, entry: codec.Entry, caps: Capabilities) -> bool:
        """``matches``, and passing when only healthy workers are asked for."""
        return self.matches(caps) and (not self.healthy or entry.health.healthy)

    def matches(self, caps: Capabilities) -> bool:
        fold = str.casefold if self.ignore_case else _same
        named = {fold(t) for t in (*self.tools, *self.has)}
        tools = {fold(t) for t in self.tools}
        provided = {fold(t) for t in caps.provided_tools(self.now)}
        return (
            (
                self.category is None
                or caps.has_capability(self.category, lambda t: fold(t) in tools, now=self.now)
            )
            and all(fold(tool) in provided for tool in self.has)
            and all(caps.has_flag(flag) for flag in self.flags)
            and all(caps.metadata.get(key) == value for key, value in self.meta)
            and (
                not self.all_required
                or caps.has_all_required_tools(lambda t: fold(t) in named, now=self.now)
            )
            and (not self.verified or caps.verify_all_capabilities(self.now))
            and all(caps.has_required_permissions(c, p) for c, p in self.permissions)
        )


def _same(name: str) -> str:
    return name


def decoded(listed: list[Listed]) -> list[Decoded]:
    """The registry's entries decoded; one that cannot be is reported and left out."""
    out = []
    for item in listed:
        try:
            out.append((item.node, item.entry, full_entry.decode(item.entry)))
        except DeclarationError as exc:
            emit(
                logging.WARNING,
                "undecodable_entry",
                node=item.node,
                id=item.entry.id,
                error=str(exc),
            )
    return out


def select(registry: Registry, q: Query) -> list[Decoded]:
    """The registry's entries that ``q`` matches (RegistryError when it cannot answer)."""
    return [found for found in decoded(registry.entries(q.narrowing())) if q.keeps(*found[1:])]


def worker_json(node: str, entry: codec.Entry, caps: Capabilities) -> dict[str, Any]:
    return {
        "id": caps.id,
        "node": node,
        "owner": entry.owner,
        "source": entry.source,
        "ref": entry.ref,
        "address": entry.address,
        "declaration": seed_json.to_seed(caps),
        "health": {"status": entry.health.status, "output": entry.health.output},
    }
