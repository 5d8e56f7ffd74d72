"""The one exception tree of capsync.

    CapsyncError
     +-- ConfigError          bad settings; fails start-up or a reload
     +-- DeclarationError     one declaration is invalid; that item is skipped
     +-- InboxUnavailable     the inbox cannot take a registration now (no push source,
          |                   store failing); the front end answers 503
          +-- NotReady        the daemon has not built its sources yet; retry shortly
     +-- TransientError       may pass on its own; ``retry_after`` (seconds) when the peer
          |                   said how long to wait (HTTP 429/503 ``Retry-After``)
          +-- SourceError     a discovery source could not list; its entries freeze
          +-- RegistryError   the registry could not be read or written; the cycle fails

It lives in `config` because that package is the bottom of the dependency stack, so every
layer can raise and catch the same types. Library exceptions (python-consul2, docker,
kubernetes) are translated at their adapter with ``raise ... from exc``.
"""

from __future__ import annotations


class CapsyncError(Exception):
    """Root of every error capsync raises on purpose."""


class ConfigError(CapsyncError):
    """The configuration is invalid; the message names the key path."""


class DeclarationError(CapsyncError):
    """A declaration cannot be accepted.

    ``problems`` holds (field path, message) pairs so a caller can report every rule that
    failed at once rather than the first one.
    """

    def __init__(self, ref: str, problems: list[tuple[str, str]]) -> None:
        self.ref = ref
        self.problems = problems
        text = "; ".join(f"{loc}: {msg}" if loc else msg for loc, msg in problems)
        super().__init__(f"{ref}: {text}")


class InboxUnavailable(CapsyncError):
    """The inbox cannot take the registration now (no push source, store failing)."""


class NotReady(InboxUnavailable):
    """The daemon has not built its sources yet: the caller should retry shortly."""


class TransientError(CapsyncError):
    """A peer failed this time; the loop retries, no sooner than ``retry_after``."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SourceError(TransientError):
    """A source failed to list (daemon unreachable, API error, time-out)."""


class RegistryError(TransientError):
    """The registry could not be read or written."""


class WriterClaimHeld(RegistryError):
    """Another writer (host) holds this registry's writer claim: this capsync writes
    nothing there (its own metric and alert: the fix is configuration, not a retry)."""
