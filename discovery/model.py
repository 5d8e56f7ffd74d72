"""The capability model and the seed library's query semantics.

These are plain frozen dataclasses: every instance has already passed validation
(``discovery.schema``), so the rest of the program never re-checks a name or a key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from discovery.tool_terms import (
    DEFAULT_EXPIRATION,
    DEFAULT_PERMISSIONS,
    NEVER_EXPIRES,
    Attestation,
    Expiration,
    Permissions,
    capability_hash,
)

Checker = Callable[[str], bool]

# Category key -> the declaration's list field. Order is the seed's; it fixes the order
# of categories wherever they are printed.
CATEGORIES: Mapping[str, str] = MappingProxyType(
    {
        "static_analysis": "static_analysis_tools",
        "security_scanning": "security_scanning_tools",
        "dynamic_analysis": "dynamic_analysis_tools",
        "fuzzing": "fuzzing_tools",
        "test_framework": "test_framework_tools",
    }
)


# A weak reference slot: equal tools are one object (discovery.shared).
@dataclass(frozen=True, slots=True, weakref_slot=True)
class ToolCapability:
    """One tool and the library's terms for it. The defaults are the minimal form's:
    the library's default permissions, an expiry that never passes, no attestation."""

    tool_name: str
    required: bool = False
    alternatives: tuple[str, ...] = ()
    permissions: Permissions = field(default_factory=Permissions)
    expiration: Expiration = field(default_factory=Expiration)
    attestation: Attestation | None = None
    verified: bool = False

    def satisfied(self, checker: Checker, *, now: int) -> bool:
        """The library's is_satisfied: live (not expired, not revoked) and passing by its
        own name or by any of its alternatives."""
        return self.expiration.live(now) and (
            checker(self.tool_name) or any(checker(alt) for alt in self.alternatives)
        )

    def attested(self, now: int) -> bool:
        """The library's verify_attestation: an attestation that passes its checks."""
        return self.attestation is not None and self.attestation.passes(now)

    def hash_matches(self) -> bool:
        """The library's verify_capability_hash: the attested hash is this tool's."""
        return self.attestation is not None and self.attestation.capability_hash == (
            capability_hash(
                self.tool_name,
                self.required,
                self.alternatives,
                self.permissions,
                self.expiration.expires_at,
            )
        )

    def has_terms(self) -> bool:
        """True when this tool says more than the minimal form can (tool, required,
        alternatives): the registry then keeps its full form beside the entry."""
        return (
            self.attestation is not None
            or self.verified
            # Most tools hold the shared defaults: the same object needs no comparing.
            or (
                self.permissions is not DEFAULT_PERMISSIONS
                and self.permissions != DEFAULT_PERMISSIONS
            )
            or (self.expiration is not DEFAULT_EXPIRATION and self.expiration != DEFAULT_EXPIRATION)
        )

    def changes_at(self, now: int) -> int | None:
        """The next instant after ``now`` at which time changes what this tool answers."""
        times = []
        expires = self.expiration.expires_at
        if not self.expiration.revoked and now <= expires < NEVER_EXPIRES:
            times.append(expires + 1)
        # An attestation matters only while the tool is live (the library's verify test).
        live = self.expiration.live(now)
        if live and self.attestation is not None and (at := self.attestation.changes_at(now)):
            times.append(at)
        return min(times, default=None)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """One worker's validated declaration, exactly as declared.

    ``tools`` maps a category key to its non-empty tuple of tools; empty categories are
    absent, so two declarations that differ only by an empty list compare equal.
    """

    id: str
    tools: Mapping[str, tuple[ToolCapability, ...]] = field(default_factory=dict)
    flags: Mapping[str, bool] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)

    def has_capability(self, category: str, checker: Checker, *, now: int) -> bool:
        """True when any tool of the category is satisfied; empty or unknown is false."""
        return any(tool.satisfied(checker, now=now) for tool in self.tools.get(category, ()))

    def has_all_required_tools(self, checker: Checker, *, now: int) -> bool:
        return all(tool.satisfied(checker, now=now) for tool in self.iter_tools() if tool.required)

    def all_tools(self) -> list[str]:
        """Every tool name and alternative, expired and revoked ones included (as the
        library's all_tools), de-duplicated and sorted."""
        return _names(self.iter_tools())

    def provided_tools(self, now: int) -> list[str]:
        """The names and alternatives of the live tools: what the worker provides now."""
        return _names(tool for tool in self.iter_tools() if tool.expiration.live(now))

    def verify_all_capabilities(self, now: int) -> bool:
        """The library's test for find_verified_workers: every tool live and attested
        (so a worker without tools passes, as in the library)."""
        return all(tool.expiration.live(now) and tool.attested(now) for tool in self.iter_tools())

    def has_required_permissions(self, category: str, permission: str) -> bool:
        """The library's test for find_workers_with_permissions: any tool of the category
        holds the permission. As in the library, expiry and revocation play no part."""
        return any(tool.permissions.has(permission) for tool in self.tools.get(category, ()))

    def has_terms(self) -> bool:
        return any(tool.has_terms() for tool in self.iter_tools())

    def changes_at(self, now: int) -> int | None:
        """The next instant after ``now`` at which time alone changes an answer."""
        return min((at for tool in self.iter_tools() if (at := tool.changes_at(now))), default=None)

    def has_flag(self, name: str) -> bool:
        return self.flags.get(name, False)

    def iter_tools(self) -> Iterable[ToolCapability]:
        for category in CATEGORIES:
            yield from self.tools.get(category, ())


def find_with_capability(
    workers: Iterable[Capabilities], category: str, checker: Checker, *, now: int
) -> list[Capabilities]:
    return [worker for worker in workers if worker.has_capability(category, checker, now=now)]


def _names(tools: Iterable[ToolCapability]) -> list[str]:
    names: set[str] = set()
    for tool in tools:
        names.add(tool.tool_name)
        names.update(tool.alternatives)
    return sorted(names)
