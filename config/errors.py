"""The one exception tree of capsync.

    CapsyncError
     +-- ConfigError          bad settings; fails start-up or a reload
     +-- DeclarationError     one declaration is invalid; that item is skipped
     +-- SourceError          a discovery source could not list; its entries freeze
     +-- RegistryError        the registry could not be read or written; the cycle fails

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


class SourceError(CapsyncError):
    """A source failed to list (daemon unreachable, API error, time-out).

    ``retry_after``: seconds the peer asked us to wait (a 429's Retry-After), if any.
    """

    def __init__(self, *args: object, retry_after: float | None = None) -> None:
        super().__init__(*args)
        self.retry_after = retry_after


class RegistryError(CapsyncError):
    """The registry could not be read or written.

    ``retry_after``: seconds the peer asked us to wait (a 429's Retry-After), if any.
    """

    def __init__(self, *args: object, retry_after: float | None = None) -> None:
        super().__init__(*args)
        self.retry_after = retry_after
