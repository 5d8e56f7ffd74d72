"""One registry's half of a cycle: snapshot -> plan (its own guard, guard memory and
policy) -> apply, and running every registry's half at once, each in a thread of its
own, waited for up to a deadline."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

from config.errors import RegistryError, WriterClaimHeld
from config.events import emit
from daemon import guard_marks, kept_entries
from daemon.cycle_report import Conflict, RegistryReport, unexpected
from daemon.kept_entries import KeptEntries
from daemon.plan import OWNER_SCOPE, Changes, DeletionGuard, Restraints, counts, plan
from daemon.registry.base import Refused, Registry, Snapshot
from discovery import codec, full_entry
from discovery.codec import Entry
from discovery.normalise import Found, Invalid

# id(found) -> (that Found, its changes_at when encoded, its entry)
Encoded = dict[int, tuple[Found, int | None, Entry]]


@dataclass(frozen=True)
class Discovered:
    """What the sources said this cycle: listed and normalised once, planned against
    every registry."""

    found: list[Found]
    invalid: list[Invalid]
    failed: set[str]
    deletions_open: bool
    now: int  # Unix seconds: which tools are live is judged at this instant
    # id(caps) -> when time alone next changes that declaration's answers (None: never)
    changes_at: dict[int, int | None] = field(default_factory=dict)
    # Release files an operator touched, consumed this cycle: their registries' held
    # deletions go through once.
    released: frozenset[Path] = frozenset()


@dataclass(frozen=True)
class SyncOptions:
    service: str
    owner: str
    policy: str = "sync"
    guard: DeletionGuard = field(default_factory=DeletionGuard)
    # Removing this file (``touch`` it) releases held deletions for one cycle.
    release_file: Path | None = None
    unhealthy: str = "mark"  # or "withdraw": critical workers are kept out


class GuardMemory:
    """The deletion guard's memory for one registry: the owned entries per guard scope
    (the owner, each source) of recent cycles, so that deletions are measured against
    the high-water mark over the window and cannot be sliced across cycles."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._marks: deque[tuple[float, dict[str, int]]] = deque()
        self._lock = threading.Lock()

    def high_water(self, current: dict[str, int], window: float) -> dict[str, int]:
        """Record this cycle's owned counts; the most seen per scope within the window."""
        with self._lock:
            now = self.clock()
            self._marks.append((now, current))
            while self._marks[0][0] < now - window:
                self._marks.popleft()
            marks: dict[str, int] = {}
            for _, sample in self._marks:
                for scope, count in sample.items():
                    marks[scope] = max(marks.get(scope, 0), count)
            return marks

    def reset(self) -> None:
        """An allowed mass deletion is the new baseline."""
        with self._lock:
            self._marks.clear()


class RegistrySync:
    """One registry's half of the cycle: its snapshot, its plan (with its own guard, guard
    memory and policy) and its apply."""

    def __init__(
        self, name: str, registry: Registry, options: SyncOptions, memory: GuardMemory | None = None
    ) -> None:
        self.name = name
        self.registry = registry
        self.options = options
        self.memory = memory or GuardMemory()
        # An unchanged declaration comes back from the Normaliser as the same Found
        # object, and is not encoded (and digested) again. Per registry: the entry
        # carries its service and owner.
        self._encoded: Encoded = {}
        # Its sync in a thread of its own, until a cycle takes its report or it ends late.
        self.running: Future[RegistryReport] | None = None
        # The last cycle's plan, when it wrote nothing and held nothing: reused while its
        # inputs are the very same objects (see _Planned).
        self._planned: _Planned | None = None
        # What an earlier process encoded (daemon/kept_entries.py), taken at the first
        # encoding; whether this registry's encoded entries differ from the file's.
        self.kept_entries = KeptEntries(None)
        self.part = kept_entries.part(name, options.service, options.owner)
        self.entries_changed = False
        self._taken = False
        self._fresh = 0
        self._now = 0  # the instant of the last encoding

    def start(self, sync: Callable[[RegistrySync], RegistryReport]) -> Future[RegistryReport]:
        """Run ``sync`` of this registry in a thread of its own (daemonic: an exit does
        not wait for a registry that stopped answering)."""
        future: Future[RegistryReport] = Future()
        future.set_running_or_notify_cancel()

        def run() -> None:
            try:
                future.set_result(sync(self))
            except BaseException as exc:  # sync never raises; were it to, never hang
                future.set_exception(exc)

        threading.Thread(target=run, daemon=True, name=f"registry-{self.name}").start()
        self.running = future
        return future

    def finished_late(self, future: Future[RegistryReport]) -> None:
        """Log the outcome of a sync the cycle stopped waiting for; free the registry."""
        report = future.result()
        self.running = None
        emit(
            logging.INFO if report.ok else logging.WARNING,
            "registry_finished_late",
            registry=self.name,
            ok=report.ok,
            error=report.registry_error,
        )

    @property
    def identity(self) -> tuple[str, ...]:
        """Whose entries the guard memory counts: a reload hands it on to the same."""
        return (self.name, self.options.service.lower(), self.options.owner)

    def sync(
        self, discovered: Discovered, *, dry_run: bool, stop: threading.Event | None
    ) -> RegistryReport:
        """This registry's half; never raises: anything unexpected (SQLite refusing a
        string, a bug in an adapter) is this registry's failure this cycle."""
        try:
            return self._sync(discovered, dry_run, stop)
        except RegistryError as exc:
            return _registry_failed(RegistryReport(self.name), exc)
        except Exception as exc:  # one registry's surprise holds back no other
            return RegistryReport(self.name, registry_error=unexpected(exc, self.name))

    def _sync(
        self, discovered: Discovered, dry_run: bool, stop: threading.Event | None
    ) -> RegistryReport:
        snapshot = self.registry.snapshot()
        guard = self.options.guard
        if not guard.allow and self.options.release_file in discovered.released:
            guard = replace(guard, allow=True)
        # The guard's marks: this process's memory and what the registry recorded (so a
        # restart or a one-shot run remembers), the higher of the two per scope.
        recorded = guard_marks.read(snapshot.meta, self.options.service)
        kept_marks = guard_marks.live(recorded, discovered.now, guard.window)
        planned = self._planned
        if planned is not None and planned.same(discovered, snapshot, guard):
            # Nothing the plan reads has changed (the registry said so by its version,
            # the sources by handing back the same declarations): the same plan, at no
            # cost per entry. The guard's memory still sees this cycle's counts.
            desired, conflicts, owned_counts = planned.desired, planned.conflicts, planned.counts
            self.memory.high_water(owned_counts, guard.window)
            changes, after = planned.changes, owned_counts
        else:
            desired, conflicts = self._desired(discovered, snapshot)
            same_snapshot = planned is not None and snapshot is planned.snapshot
            owned_counts = (
                planned.counts
                if planned is not None and same_snapshot
                else counts(snapshot.owned.values())
            )
            remembered = self.memory.high_water(owned_counts, guard.window)
            changes = plan(
                snapshot.owned,
                desired,
                restraints=Restraints(
                    keep=_kept(snapshot, discovered.failed, discovered.invalid),
                    deletions_open=discovered.deletions_open,
                    high_water={
                        scope: max(remembered.get(scope, 0), kept_marks.get(scope, 0))
                        for scope in remembered.keys() | kept_marks.keys()
                    },
                    health=snapshot.health,
                    withdraw=self.options.unhealthy == "withdraw",
                ),
                guard=guard,
                policy=self.options.policy,
            )
            _report_mass_withdrawal(self.name, changes, len(snapshot.owned), guard)
            # Recorded: the most owned before or after this apply (counted from what
            # changes: an update keeps its entry's scope, as before).
            after = _after(owned_counts, counts(changes.delete), counts(changes.create))
            if not same_snapshot:
                _share(snapshot, desired)
            # Kept only when it wrote and held nothing: work to do is planned afresh.
            quiet = not (changes.writes or changes.held)
            self._planned = (
                _Planned(discovered, snapshot, guard, desired, conflicts, changes, owned_counts)
                if quiet
                else None
            )
        peak = {s: max(owned_counts.get(s, 0), after.get(s, 0)) for s in owned_counts | after}
        if guard.allow and changes.delete and not dry_run:
            self.memory.reset()  # an allowed mass deletion is the new baseline
            recorded, peak = {}, after
        marks = guard_marks.advance(recorded, peak, discovered.now, guard.window)
        value = guard_marks.encode(marks)
        if value != (snapshot.meta or {}).get(guard_marks.key(self.options.service)):
            changes = replace(changes, record={guard_marks.key(self.options.service): value})
        report = RegistryReport(
            self.name,
            changes=changes,
            conflicts=tuple(conflicts),
            desired=desired,
            owned=snapshot.owned,
            keeps_health=snapshot.health,
        )
        if dry_run or not changes.writes:
            return report
        started = time.monotonic()
        try:
            applied = self.registry.apply(changes, stop)
        except RegistryError as exc:
            return _registry_failed(report, exc)
        found = tuple(_conflict(item, desired) for item in applied.conflicts)
        return replace(
            report,
            applied=applied,
            conflicts=report.conflicts + found,
            apply_seconds=time.monotonic() - started,
        )

    def _desired(
        self, discovered: Discovered, snapshot: Snapshot
    ) -> tuple[dict[str, Entry], list[Conflict]]:
        """Encode every declaration; the first source (config order) wins a shared id.

        Ids compare case-folded, as the registries compare them: ``W1`` after ``w1`` is
        a conflict, and so is an id another writer holds in any case.
        """
        desired: dict[str, Entry] = {}
        conflicts = []
        encoded: Encoded = {}
        stored = self._take_stored()
        before = len(stored) if stored else len(self._encoded)
        self._fresh = 0  # encoded afresh by this call (neither kept nor stored)
        for item in discovered.found:
            decl, worker_id = item.declaration, item.caps.id
            folded = worker_id.casefold()
            if folded in desired:
                winner = desired[folded]
                conflicts.append(
                    Conflict(
                        worker_id,
                        decl.source,
                        decl.ref,
                        f"{winner.id!r} already declared by {winner.source} "
                        f"{winner.ref} (ids compare case-insensitively)",
                    )
                )
            elif folded in snapshot.foreign:
                conflicts.append(
                    Conflict(
                        worker_id,
                        decl.source,
                        decl.ref,
                        "another writer (owner or service) registered this "
                        "id, in some letter case, on capsync's node",
                    )
                )
            else:
                desired[folded] = self._encode(item, encoded, discovered, stored)
        fresh = self._fresh
        if stored:
            kept_entries.reused(self.name, len(encoded) - fresh, fresh)
        self.entries_changed |= bool(fresh) or len(encoded) != before
        self._encoded, self._now = encoded, discovered.now
        return desired, conflicts

    def _take_stored(self) -> dict[kept_entries.Key, kept_entries.Encoded]:
        """What an earlier process encoded for this registry, at its first encoding
        only (then it is released: this process's own memory takes over)."""
        if self._taken:
            return {}
        self._taken = True
        stored = self.kept_entries.kept(self.part)
        self.kept_entries.release(self.part)
        return stored

    def entries_kept(self) -> dict[kept_entries.Key, kept_entries.Encoded]:
        """This registry's encoded entries, as the file keeps them."""
        return kept_entries.memory(self._encoded.values(), self._now)

    def _encode(
        self,
        item: Found,
        encoded: Encoded,
        discovered: Discovered,
        stored: dict[kept_entries.Key, kept_entries.Encoded],
    ) -> Entry:
        decl = item.declaration
        # Which tools are live is part of the entry: a cached one (this process's, or
        # an earlier one's for the very same declaration) is reused only while time has
        # changed nothing about it.
        at = discovered.changes_at[id(item.caps)]
        cached = self._encoded.get(id(item))
        kept = stored.get(key) if stored and (key := kept_entries.key(item)) else None
        if cached is not None and cached[0] is item and cached[1] == at:
            entry: Entry = cached[2]
            if entry.health is decl.health:  # the common case, without comparing
                encoded[id(item)] = cached
                return entry
        elif kept is not None and kept[1] == at:
            entry = kept[2]
        else:
            self._fresh += 1
            entry = full_entry.encode(
                item.caps,
                codec.Provenance(
                    service=self.options.service,
                    owner=self.options.owner,
                    source=decl.source,
                    ref=decl.ref,
                    address=decl.address,
                ),
                now=discovered.now,
            )
        if entry.health != decl.health:
            entry = replace(entry, health=decl.health)
        encoded[id(item)] = (item, at, entry)
        return entry


@dataclass(frozen=True)
class _Planned:
    """A plan that wrote and held nothing, with the inputs it was made from. It holds
    again while those inputs are the same objects: the registry hands back the same
    Snapshot only while its version (Consul's index, SQLite's data version) says nothing
    was written since, and the cycle hands back the same declarations only while every
    source listed exactly what it listed before."""

    discovered: Discovered
    snapshot: Snapshot
    guard: DeletionGuard
    desired: dict[str, Entry]
    conflicts: list[Conflict]
    changes: Changes
    counts: dict[str, int]

    def same(self, discovered: Discovered, snapshot: Snapshot, guard: DeletionGuard) -> bool:
        last = self.discovered
        return (
            snapshot is self.snapshot
            and discovered.found is last.found
            and discovered.invalid is last.invalid
            and discovered.changes_at is last.changes_at
            and discovered.deletions_open == last.deletions_open
            and discovered.failed == last.failed
            and guard == self.guard
        )


def each_registry(
    registries: Sequence[RegistrySync],
    sync: Callable[[RegistrySync], RegistryReport],
    deadline: float | None,
) -> list[RegistryReport]:
    """Every registry at once, each in its own thread: a slow or failing one does not
    hold back the others' writes (its own entries stay as they were)."""
    if len(registries) == 1:
        return [sync(registries[0])]
    if deadline is None:
        with ThreadPoolExecutor(len(registries), "registry") as pool:
            return list(pool.map(sync, registries))
    return _each_registry_by_deadline(registries, sync, deadline)


def _each_registry_by_deadline(
    registries: Sequence[RegistrySync],
    sync: Callable[[RegistrySync], RegistryReport],
    deadline: float,
) -> list[RegistryReport]:
    """Each registry's sync runs in a thread of its own; the cycle waits ``deadline``
    seconds for them. One still running then is reported "still applying" and goes
    on alone (its outcome is logged when it ends); until it ends, that registry's
    syncs are skipped, so one registry never has two applies at once."""
    started = {target.name: target.start(sync) for target in registries if target.running is None}
    wait(started.values(), timeout=deadline)
    reports = []
    for target in registries:
        future = started.get(target.name)
        if future is not None and future.done():
            target.running = None
            reports.append(future.result())
            continue
        if future is not None:
            future.add_done_callback(target.finished_late)
        reports.append(
            RegistryReport(
                target.name,
                registry_error=(
                    f"still applying after {deadline:g}s; its entries are synced again once it ends"
                ),
            )
        )
    return reports


def _conflict(refused: Refused, desired: Mapping[str, Entry]) -> Conflict:
    """An id the store found held by another writer when it wrote (planted since the
    snapshot, or a key no snapshot lists): a conflict like those the snapshot shows."""
    entry = desired.get(refused.id.casefold())
    source, ref = (entry.source, entry.ref) if entry is not None else ("", "")
    return Conflict(refused.id, source, ref, refused.reason)


def _after(
    owned: dict[str, int], deleted: dict[str, int], created: dict[str, int]
) -> dict[str, int]:
    """The per-scope counts an apply leaves (``counts`` of the owned entries after it),
    from the changes alone: a scope left with nothing is not listed."""
    out = dict(owned)
    for scope, count in deleted.items():
        out[scope] = out.get(scope, 0) - count
    for scope, count in created.items():
        out[scope] = out.get(scope, 0) + count
    return {scope: count for scope, count in out.items() if count or scope == OWNER_SCOPE}


def _share(snapshot: Snapshot, desired: Mapping[str, Entry]) -> None:
    """Hold each owned entry equal to its desired one (with the same document and the
    same health, which equality leaves out) as that one object: a snapshot a registry
    keeps from cycle to cycle then costs no second copy of every unchanged entry (a
    decoded answer's dicts and strings), and still says what the registry holds."""
    owned = snapshot.owned
    if not isinstance(owned, dict):
        return
    for worker_id, entry in owned.items():
        new = desired.get(worker_id.casefold())
        if (
            new is not None
            and new is not entry
            and new == entry
            and new.document == entry.document
            and new.health == entry.health
        ):
            owned[worker_id] = new


def _report_mass_withdrawal(name: str, changes: Changes, owned: int, guard: DeletionGuard) -> None:
    """Withdrawals are not held (a withdrawal is not a deletion: the worker comes back
    when it recovers), but as many as the deletion guard would hold are reported."""
    count = len(changes.withdraw)
    if count > guard.min_count and count > guard.max_fraction * max(owned, 1):
        emit(
            logging.WARNING,
            "mass_withdrawal",
            registry=name,
            withdrawing=count,
            owned=owned,
            reason="critical workers withdrawn (unhealthy = withdraw); not held: they "
            "come back when they recover",
        )


def _registry_failed(report: RegistryReport, exc: RegistryError) -> RegistryReport:
    return replace(
        report,
        registry_error=str(exc),
        retry_after=exc.retry_after,
        claim_held_elsewhere=isinstance(exc, WriterClaimHeld),
    )


def _kept(snapshot: Snapshot, failed: set[str], invalid: list[Invalid]) -> set[str]:
    """Case-folded ids of the owned entries to leave exactly as they are: their source
    failed, or their declaration is invalid this cycle (same source, and the same id or
    a reference the invalid item covers: ``f.json`` covers ``f.json`` and its items
    ``f.json[0]``, ``f.json[1]``...)."""
    if not failed and not invalid:
        return set()
    bad_ids = {(item.source, item.worker_id.casefold()) for item in invalid if item.worker_id}
    bad_refs = {(item.source, codec.ref_value(item.ref)) for item in invalid}
    return {
        worker_id.casefold()
        for worker_id, entry in snapshot.owned.items()
        if entry.source in failed
        or (entry.source, worker_id.casefold()) in bad_ids
        or (entry.source, entry.ref) in bad_refs
        or (entry.source, _container(entry.ref)) in bad_refs
    }


def _container(ref: str) -> str:
    """``f.json[3]`` -> ``f.json``: the object an item's reference belongs to."""
    return ref[: ref.rindex("[")] if ref.endswith("]") and "[" in ref else ref
