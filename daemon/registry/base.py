"""The interface every registry implements, and the values it exchanges with the cycle."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol

from config.errors import RegistryError
from daemon.plan import Changes
from daemon.query import Query
from discovery.codec import Entry

# A registry that hands back its last Snapshot while its version says nothing was
# written (Consul's index, SQLite's data version) still reads everything at least this
# often: a bound on how long a change it could not see (a restored backup whose index
# came back to the same number) goes unrepaired.
REREAD_SECONDS = 300.0


@dataclass(frozen=True)
class Snapshot:
    """What this owner may touch, read in one go at the start of a cycle.

    ``owned`` are this owner's entries of this service. ``foreign`` are the case-folded
    ids of everything else on capsync's node (another owner's, or another service's):
    a desired entry with such an id is reported as a conflict, never written over.
    """

    owned: Mapping[str, Entry]
    foreign: frozenset[str] = frozenset()
    meta: Mapping[str, str] | None = None  # capsync's node meta as read (None: no node)
    # The registry keeps each entry's health (read back into ``Entry.health``), so the
    # plan includes health updates for it.
    health: bool = False


class KeptRead:
    """A registry's last full read and the version it was read at (any value the
    registry moves on every write, its own or anyone's): handed back while the version
    is the same, for at most ``REREAD_SECONDS`` whatever the version says. The one rule
    of every registry that reuses its snapshot in a steady cycle."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._kept: tuple[Hashable, float, Snapshot] | None = None

    def fresh(self) -> bool:
        """A read is kept and young enough to be handed back: worth asking the version."""
        return self._kept is not None and self._clock() - self._kept[1] < REREAD_SECONDS

    def get(self, version: Hashable | None) -> Snapshot | None:
        """The kept read when ``version`` (None: unknown) is the one it was read at."""
        kept = self._kept
        if kept is None or version is None or kept[0] != version or not self.fresh():
            return None
        return kept[2]

    def start(self) -> float:
        """The time a full read starts, to hand to ``keep``."""
        return self._clock()

    def keep(self, version: Hashable | None, started: float, snapshot: Snapshot) -> None:
        """Keep a full read; a version that is None (unknown, or moved while it was
        read) keeps nothing."""
        self._kept = None if version is None else (version, started, snapshot)

    def forget(self) -> None:
        self._kept = None


@dataclass(frozen=True)
class Refused:
    """An entry a registry did not write, and why. ``foreign``: the id is held by an
    entry capsync did not write (or another owner's): a conflict, left alone, which
    fails nothing else; otherwise the store could not hold the entry."""

    id: str
    reason: str
    foreign: bool = False


Action = Literal["create", "update", "delete", "health", "withdraw"]


@dataclass(frozen=True)
class Operation:
    """One planned write; an update keeps the old entry (its id may differ in case). A
    ``health`` operation writes only the entry's health (its declaration is unchanged)."""

    action: Action
    entry: Entry
    old: Entry | None = None

    @property
    def removes(self) -> bool:
        """A delete, or a withdrawal (the unhealthy worker taken out of the registry,
        written as a delete: it comes back as a create when it recovers)."""
        return self.action in ("delete", "withdraw")


def operations(changes: Changes) -> list[Operation]:
    return [
        *(Operation("create", entry) for entry in changes.create),
        *(Operation("update", u.new, u.old) for u in changes.update),
        *(Operation("delete", entry) for entry in changes.delete),
        *(Operation("health", u.new, u.old) for u in changes.health),
        *(Operation("withdraw", u.old, u.new) for u in changes.withdraw),
    ]


@dataclass(frozen=True)
class ApplyResult:
    """What an apply did, counted from the registry's answers, not from the plan.

    ``unsent``: never sent (the daemon was stopping). ``interrupted``: sent in a request
    that failed without a verdict (time-out, 5xx); the next cycle finds out.
    ``conflicts``: ids found held by another writer when written (a conflict, as in the
    snapshot: reported, left alone, and the apply is complete all the same).
    """

    requests: int = 0
    written: Mapping[Action, int] = field(default_factory=dict)
    refused: tuple[Refused, ...] = field(default_factory=tuple)
    unsent: int = 0
    interrupted: int = 0
    errors: tuple[str, ...] = ()
    conflicts: tuple[Refused, ...] = ()

    @property
    def applied(self) -> int:
        return sum(self.written.values())

    @property
    def complete(self) -> bool:
        return not (self.refused or self.unsent or self.interrupted)


@dataclass
class Tally:
    """An apply's running count, shared by the registries."""

    requests: int = 0
    written: Counter[Action] = field(default_factory=Counter)
    refused: list[Refused] = field(default_factory=list)
    unsent: int = 0
    interrupted: int = 0
    errors: list[str] = field(default_factory=list)
    conflicts: list[Refused] = field(default_factory=list)

    def wrote(self, batch: list[Operation]) -> None:
        self.written.update(op.action for op in batch)

    def refuse(self, batch: list[Operation], reason: str) -> None:
        self.refused += [Refused(op.entry.id, reason) for op in batch]

    def answered(self, op: Operation, refused: Refused) -> None:
        """A store's verdict on one operation it did not write."""
        if refused.foreign:
            self.conflicts.append(Refused(op.entry.id, refused.reason, foreign=True))
        else:
            self.refuse([op], refused.reason)

    def fail(self, batch: list[Operation], reason: str) -> None:
        """A request failed without a verdict on its operations."""
        self.interrupted += len(batch)
        self.errors.append(reason)

    def batches(
        self, ops: list[Operation], size: int, stop: threading.Event | None
    ) -> Iterator[list[Operation]]:
        """``ops`` ``size`` at a time, each one request; once ``stop`` is set, the
        batches not begun are counted unsent."""
        for start in range(0, len(ops), size):
            chunk = ops[start : start + size]
            if stop is not None and stop.is_set():
                self.unsent += len(chunk)
                continue
            self.requests += 1
            yield chunk

    def result(self) -> ApplyResult:
        return ApplyResult(
            self.requests,
            dict(self.written),
            tuple(self.refused),
            self.unsent,
            self.interrupted,
            tuple(self.errors),
            tuple(self.conflicts),
        )


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


WriteOp = Callable[[Operation], Refused | None]  # writes one operation; None when written


def apply_in_batches(
    changes: Changes,
    *,
    write: WriteOp,
    size: int,
    stop: threading.Event | None,
    batch: Callable[[], AbstractContextManager[object]],
) -> ApplyResult:
    """The write loop of a registry that checks ownership row by row (SQLite, memory):
    creates and updates, then deletes, ``size`` to a ``batch`` (a transaction). When
    ``stop`` is set the batches not begun are counted unsent; a batch that fails as a
    whole (RegistryError: rolled back) refuses its operations and the next batch is
    tried all the same. Counts come from what each write answered."""
    tally = Tally()
    for chunk in tally.batches(operations(changes), size, stop):
        try:
            with batch():
                results = [(op, write(op)) for op in chunk]
        except RegistryError as exc:  # rolled back: nothing of the batch was written
            tally.refuse(chunk, str(exc))
            continue
        tally.wrote([op for op, refused in results if refused is None])
        for op, refused in results:
            if refused is not None:
                tally.answered(op, refused)
    return tally.result()
