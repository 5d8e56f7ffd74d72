"""The interface every registry implements, and the values it exchanges with the cycle."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

from daemon.plan import Changes
from daemon.query import Query
from discovery.codec import Entry


@dataclass(frozen=True)
class Snapshot:
    """What this owner may touch, read in one go at the start of a cycle.

    ``foreign`` are ids on capsync's own node that another writer registered: a desired
    entry with such an id is reported as a conflict, never written over.
    """

    owned: Mapping[str, Entry]
    foreign: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Refused:
    id: str
    reason: str


@dataclass(frozen=True)
class ApplyResult:
    requests: int = 0
    applied: int = 0
    refused: tuple[Refused, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Listed:
    """An entry found by a query, with the node it is registered on."""

    node: str
    entry: Entry


class Registry(Protocol):
    def snapshot(self) -> Snapshot:
        """The entries this owner wrote; RegistryError when the registry cannot be read."""
        ...

    def apply(self, changes: Changes, stop: threading.Event | None = None) -> ApplyResult:
        """Write the changes; entries the registry refuses are returned, not raised.
        RegistryError when the registry is unreachable (the next cycle repairs). When
        ``stop`` is set, return after the batch in flight (shutdown)."""
        ...

    def entries(self, query: Query | None = None) -> list[Listed]:
        """Capsync entries of the service, on any node and of any owner, narrowed by
        ``query`` as far as the registry can index it; a superset of the matches (the
        caller applies ``query.matches`` to the decoded entries)."""
        ...

    def close(self) -> None: ...


WriteOp = Callable[[Entry], str]  # writes one entry; the reason when refused, else ""


def apply_in_batches(
    changes: Changes,
    *,
    upsert: WriteOp,
    delete: WriteOp,
    size: int,
    stop: threading.Event | None,
    batch: Callable[[], AbstractContextManager[object]],
) -> ApplyResult:
    """The write loop of a registry that checks ownership row by row: creates and
    updates, then deletes, ``size`` to a ``batch`` (a transaction), stopping between
    batches when ``stop`` is set."""
    ops: list[tuple[WriteOp, Entry]] = [
        *((upsert, entry) for entry in changes.create),
        *((upsert, update.new) for update in changes.update),
        *((delete, entry) for entry in changes.delete),
    ]
    requests = applied = 0
    refused: list[Refused] = []
    for start in range(0, len(ops), size):
        if stop is not None and stop.is_set():
            break
        with batch():
            for op, entry in ops[start : start + size]:
                if reason := op(entry):
                    refused.append(Refused(entry.id, reason))
                else:
                    applied += 1
        requests += 1
    return ApplyResult(requests=requests, applied=applied, refused=tuple(refused))
