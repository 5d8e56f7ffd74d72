"""What every source returns, and the one-method interface it implements."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, runtime_checkable

from config.errors import DeclarationError
from config.events import emit
from discovery import documents
from discovery.health import PASSING, Health


@dataclass(frozen=True, slots=True)
class Declaration:
    """A parsed but not yet validated declaration, with where it came from.

    ``data`` is the parsed body, or None with ``reload`` set: a source that remembers
    what it listed keeps a way to read the body again, not the body itself.
    """

    source: str
    ref: str
    data: Any
    default_id: str | None = None
    address: str = ""
    # What the source read, or a stamp of it (a digest of a file's bytes, a label's
    # text): the same fingerprint at the same ref means the same declaration, so its
    # validation is reused. A str or bytes fingerprint must be the content itself or a
    # digest of it: it is trusted by later processes too (discovery/validations.py).
    fingerprint: Hashable = None
    reload: Callable[[], Any] | None = None
    # What the place the worker lives says of it now; beside the declaration, not part
    # of its fingerprint: a health change is no new declaration.
    health: Health = PASSING

    def without_body(self, reload: Callable[[], Any] | None = None) -> Declaration:
        """This declaration holding no parsed body (``reload`` reads it again, if
        given). Built directly: ``dataclasses.replace`` costs several times more, once
        per declaration of a cold sync."""
        return Declaration(
            self.source,
            self.ref,
            None,
            default_id=self.default_id,
            address=self.address,
            fingerprint=self.fingerprint,
            reload=reload,
            health=self.health,
        )

    def body(self) -> Any:
        """The parsed body; DeclarationError if it has to be read again and cannot."""
        return self.reload() if self.data is None and self.reload is not None else self.data


@dataclass
class Listing:
    """One successful listing: declarations to validate, and items already known bad
    (unreadable, malformed) that must be reported and whose old entries must be kept.
    Mutable on purpose: a source builds it up item by item and ``extend`` merges two."""

    declarations: list[Declaration] = field(default_factory=list)
    invalid: list[DeclarationError] = field(default_factory=list)

    def extend(self, other: Listing) -> None:
        self.declarations.extend(other.declarations)
        self.invalid.extend(other.invalid)


def from_text(
    source: str, ref: str, text: str, *, default_id: str | None = None, address: str = ""
) -> Declaration:
    """A declaration held as raw JSON text (a label, an annotation, a meta value),
    fingerprinted by that text: parsed only when it has to be validated, so an unchanged
    declaration costs nothing in a steady cycle, whatever its source."""
    return Declaration(
        source,
        ref,
        None,
        default_id=default_id,
        address=address,
        fingerprint=text,
        reload=partial(parse_one, text, ref),
    )


def parse_one(text: bytes | str, ref: str) -> Any:
    """The one JSON object ``text`` holds; DeclarationError if it holds anything else."""
    [(_, data)] = documents.parse(text, ref=ref, fmt="json")
    return data


class Source(Protocol):
    """A discovery source. ``name`` is written to each entry's capsync-source."""

    name: str

    def list(self) -> Listing:
        """Everything the source declares now; raise SourceError when it cannot tell."""
        ...

    def close(self) -> None:
        """Release what the source holds (connections, sessions) and interrupt a blocking
        ``watch`` call, so its thread ends within 2 s. Called once, at reload or exit."""
        ...


@runtime_checkable
class Watchable(Protocol):
    """A source that can tell when its declarations may have changed (events, watches).

    ``watch`` blocks until ``stop`` is set, calling ``notify(reason)`` on each relevant
    change. It reconnects with backoff on its own and never raises: a broken stream only
    delays the next sync until the scheduled one.
    """

    def watch(self, notify: Callable[[str], None], stop: threading.Event) -> None: ...


def watch_failed(source: str, error: str, retry_in: float, **fields: str) -> None:
    """The one log line of a source's watch that failed and retries in ``retry_in`` s."""
    emit(
        logging.WARNING,
        "watch_failed",
        source=source,
        **fields,
        error=error,
        retry_in=f"{retry_in:g}s",
    )
