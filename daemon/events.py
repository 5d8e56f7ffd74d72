"""The change-event bus: what each registry holds, and one event per change after each
apply, for the watch endpoints and the publishers (WebSocket, gRPC, RabbitMQ).

The cycle hands over each registry's entries after its apply (``update``); the bus diffs
them against the previous view and numbers every change with one sequence over all
registries. A subscriber starts from a snapshot (the current entries and the sequence
they stand at) or resumes after a sequence number still in the history. Each subscriber
has a bounded queue: one that falls behind is dropped with a reason, never waited for,
so publishing never blocks a cycle. Subscribers may live in any thread or event loop:
``wakeup`` is called (from the publishing thread) when events arrive, and ``wait``
serves threads.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from config.errors import DeclarationError
from daemon.cycle_report import CycleReport, RegistryReport
from discovery import full_entry, seed_json
from discovery.codec import Entry
from discovery.health import STATUSES

# "health": the entry's declaration is unchanged and its health status changed;
# "withdrawn": a critical worker taken out of a registry set to withdraw.
Action = Literal["created", "updated", "deleted", "health", "withdrawn"]
HISTORY = 10_000
QUEUE = 1_000


@dataclass(frozen=True)
class ChangeEvent:
    sequence: int
    action: Action
    registry: str
    id: str
    entry: Entry

    def as_json(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "action": self.action,
            "registry": self.registry,
            "id": self.id,
            **describe(self.entry),
        }


def describe(entry: Entry) -> dict[str, Any]:
    """Where an entry came from and its declaration (None when it cannot be decoded)."""
    try:
        declaration: dict[str, Any] | None = seed_json.to_seed(full_entry.decode(entry))
    except DeclarationError:
        declaration = None
    return {
        "source": entry.source,
        "ref": entry.ref,
        "owner": entry.owner,
        "declaration": declaration,
        "health": {"status": entry.health.status, "output": entry.health.output},
    }


@dataclass(frozen=True)
class Start:
    """How a subscription begins: a snapshot (``entries``: registry -> id -> entry, at
    ``sequence``), or the events after the sequence it resumed from (``snapshot`` False)."""

    stream: str
    sequence: int
    snapshot: bool
    entries: Mapping[str, Mapping[str, Entry]] = field(default_factory=dict)
    events: tuple[ChangeEvent, ...] = ()


class Subscription:
    def __init__(self, bus: EventBus, limit: int, wakeup: Callable[[], None]) -> None:
        self._bus = bus
        self._limit = limit
        self._wakeup = wakeup
        self._cond = threading.Condition()
        self._queue: deque[ChangeEvent] = deque()
        self.dropped = ""

    def drain(self) -> list[ChangeEvent]:
        """The queued events (empty when none); check ``dropped`` after."""
        with self._cond:
            events = list(self._queue)
            self._queue.clear()
            return events

    def wait(self, timeout: float) -> list[ChangeEvent]:
        with self._cond:
            if not self._queue and not self.dropped:
                self._cond.wait(timeout)
        return self.drain()

    def close(self) -> None:
        self._bus.unsubscribe(self)

    def _offer(self, events: list[ChangeEvent]) -> bool:
        """Queue events; False (and dropped) when the queue would pass its limit."""
        with self._cond:
            if len(self._queue) + len(events) > self._limit:
                self._queue.clear()
                self.dropped = (
                    f"slow subscriber: more than {self._limit} events queued; "
                    "resume from your last sequence number or take a snapshot"
                )
            else:
                self._queue.extend(events)
            self._cond.notify_all()
        try:
            self._wakeup()
        except RuntimeError as exc:  # its event loop is gone: so is the subscriber
            self.dropped = f"subscriber gone: {exc}"
        return not self.dropped


def publish(bus: EventBus, report: CycleReport) -> None:
    """Feed the bus from a cycle: each registry that was read, as it is after the apply."""
    for reg in report.registries:
        if not reg.registry_error:
            withdrawn = {u.new.id: u.new for u in reg.changes.withdraw}
            bus.update(reg.name, after_apply(reg), withdrawn)


def after_apply(reg: RegistryReport) -> dict[str, Entry]:
    """The owned entries as the cycle left them: the snapshot with the applied changes
    (those the registry refused, or did not reach when stopped, are caught up by the
    next cycle's snapshot)."""
    view = dict(reg.owned)
    if reg.applied is None:
        return view
    refused = {r.id for r in reg.applied.refused}
    for entry in (*reg.changes.delete, *(u.old for u in reg.changes.withdraw)):
        if entry.id not in refused:
            view.pop(entry.id, None)
    changed = (*reg.changes.update, *reg.changes.health)
    for entry in (*reg.changes.create, *(u.new for u in changed)):
        if entry.id not in refused:
            view[entry.id] = entry
    return view


def health_counts(reg: RegistryReport) -> dict[str, int] | None:
    """The registry's entries per health status after the cycle; None when the registry
    keeps no health."""
    if not reg.keeps_health or reg.registry_error:
        return None
    counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
    for entry in after_apply(reg).values():
        counts[entry.health.status] += 1
    return counts


class EventBus:
    def __init__(self, *, history: int = HISTORY, queue: int = QUEUE) -> None:
        self.stream = uuid.uuid4().hex[:12]
        self.queue = queue
        self._lock = threading.Lock()
        self._views: dict[str, dict[str, Entry]] = {}
        self._history: deque[ChangeEvent] = deque(maxlen=history)
        self._sequence = 0
        self._subscribers: list[Subscription] = []
        self.dropped = 0  # subscribers dropped since start (slow or gone): a metric

    def update(
        self,
        registry: str,
        entries: Mapping[str, Entry],
        withdrawn: Mapping[str, Entry] | None = None,
    ) -> list[ChangeEvent]:
        """The registry now holds ``entries`` (id -> entry): publish what changed.
        ``withdrawn``: the critical workers it took out (id -> the worker, its health)."""
        withdrawn = withdrawn or {}
        with self._lock:
            old = self._views.get(registry, {})
            events = []
            for worker_id in sorted(old.keys() | entries.keys()):
                before, after = old.get(worker_id), entries.get(worker_id)
                action: Action
                if after is None and worker_id in withdrawn:
                    action, after = "withdrawn", withdrawn[worker_id]
                elif before is None or after is None:
                    action = "created" if before is None else "deleted"
                elif before != after:
                    action = "updated"
                elif before.health.status != after.health.status:
                    action = "health"
                else:
                    continue
                self._sequence += 1
                changed = after if after is not None else before
                assert changed is not None
                events.append(ChangeEvent(self._sequence, action, registry, worker_id, changed))
            self._views[registry] = dict(entries)
            self._history.extend(events)
            if events:
                kept = [s for s in self._subscribers if s._offer(events)]
                self.dropped += len(self._subscribers) - len(kept)
                self._subscribers = kept
            return events

    def subscribe(
        self,
        since: int | None = None,
        *,
        stream: str | None = None,
        wakeup: Callable[[], None] = lambda: None,
        limit: int | None = None,
    ) -> tuple[Start, Subscription]:
        """A snapshot, or the events after ``since`` when that sequence of this stream is
        still in the history. ``limit``: the subscriber's queue, when it is not the bus's
        (a publisher with its own bounded outbox takes a whole cycle's events at once)."""
        subscription = Subscription(self, limit or self.queue, wakeup)
        with self._lock:
            oldest = self._history[0].sequence if self._history else self._sequence + 1
            resumable = (
                since is not None
                and stream == self.stream
                and oldest - 1 <= since <= self._sequence
            )
            if resumable:
                start = Start(
                    self.stream,
                    self._sequence,
                    False,
                    events=tuple(e for e in self._history if e.sequence > (since or 0)),
                )
            else:
                start = Start(
                    self.stream,
                    self._sequence,
                    True,
                    entries={name: dict(view) for name, view in self._views.items()},
                )
            self._subscribers.append(subscription)
        return start, subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)
