"""The terms the seed library attaches to every tool: permissions, expiry, attestation.

Facts from the library (worker-capabilities, ``types.rs``, ``attestation.rs``,
``constants.rs``), restated here, not copied: permissions default to all false, 128 MB,
50 % CPU, 30 s; a tool is expired when ``now > expires_at``; an attestation passes the
library's check when it is at most 365 days old (a timestamp in the future fails, as the
library's unsigned subtraction wraps), its algorithm is ``SHA256-RSA`` and its signature
and public key are non-empty. The library does not verify the signature: neither do we,
and nothing here proves who attested a tool. Time is always passed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_MEMORY_LIMIT_MB = 128
DEFAULT_CPU_LIMIT_PERCENT = 50
DEFAULT_TIMEOUT_SECONDS = 30
ATTESTATION_VALID_SECONDS = 365 * 24 * 60 * 60
ATTESTATION_ALGORITHM = "SHA256-RSA"
U64_MAX = 2**64 - 1
# The expiry written for a tool declared without one (the minimal form): it never passes,
# where the library's own default is 24 hours after creation. 2**53 - 1 is a valid u64
# for serde and the largest integer every JSON reader (JavaScript included) holds exactly.
NEVER_EXPIRES = 2**53 - 1

# The permission names the library's has_permission knows, in its order.
PERMISSIONS = (
    "filesystem_access",
    "network_access",
    "process_spawn",
    "env_access",
    "system_access",
)


@dataclass(frozen=True, slots=True)
class Permissions:
    filesystem_access: bool = False
    network_access: bool = False
    process_spawn: bool = False
    env_access: bool = False
    system_access: bool = False
    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB
    cpu_limit_percent: int = DEFAULT_CPU_LIMIT_PERCENT
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS

    def has(self, permission: str) -> bool:
        """The library's has_permission: a name it does not know is false."""
        return permission in PERMISSIONS and bool(getattr(self, permission))


@dataclass(frozen=True, slots=True)
class Expiration:
    expires_at: int = NEVER_EXPIRES
    revoked: bool = False
    revocation_reason: str | None = None
    revoked_at: int | None = None
    revoked_by: str | None = None

    def expired(self, now: int) -> bool:
        return now > self.expires_at

    def live(self, now: int) -> bool:
        """Neither expired nor revoked: the only state in which a tool provides anything."""
        return not self.revoked and now <= self.expires_at  # not expired, inlined


# The terms of a tool that declares none: one instance each, shared (see schema._terms).
DEFAULT_PERMISSIONS = Permissions()
DEFAULT_EXPIRATION = Expiration()


@dataclass(frozen=True, slots=True)
class Attestation:
    capability_hash: str
    signature: str
    public_key: str
    timestamp: int
    algorithm: str
    attester: str

    def passes(self, now: int) -> bool:
        """The library's verify_attestation (no signature check: the library has none)."""
        return (
            self.timestamp <= now
            and now - self.timestamp <= ATTESTATION_VALID_SECONDS
            and self.algorithm == ATTESTATION_ALGORITHM
            and bool(self.signature)
            and bool(self.public_key)
        )

    def changes_at(self, now: int) -> int | None:
        """The next instant after ``now`` at which ``passes`` can change, if any."""
        if now < self.timestamp:
            return self.timestamp
        end = self.timestamp + ATTESTATION_VALID_SECONDS + 1
        return end if now < end else None


def capability_hash(
    tool_name: str,
    required: bool,
    alternatives: Iterable[str],
    permissions: Permissions,
    expires_at: int,
) -> str:
    """The library's generate_capability_hash: SHA-256, lower-case hex, over the fields'
    text concatenated without separators (booleans as true/false, integers in decimal)."""
    parts = [
        tool_name,
        _bool(required),
        ",".join(alternatives),
        *(_bool(getattr(permissions, name)) for name in PERMISSIONS),
        str(permissions.memory_limit_mb),
        str(permissions.cpu_limit_percent),
        str(permissions.timeout_seconds),
        str(expires_at),
    ]
    return hashlib.sha256("".join(parts).encode("utf-8")).hexdigest()


def _bool(value: bool) -> str:
    return "true" if value else "false"
