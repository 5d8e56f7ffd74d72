"""One sync cycle, read as the pipeline: sources -> normalise, then for each registry
(at once, in threads): snapshot -> plan -> apply.

``Syncer`` keeps the little state that spans cycles: which sources have listed since
start (the first-sync gate) and, per registry, the owned counts of recent cycles (the
deletion guard's memory, ``GuardMemory``: a reload hands both on, a restart starts them
afresh). Everything else is recomputed each cycle, so a failed or interrupted apply is
repaired by the next one.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from pathlib import Path

from config.errors import RegistryError, SourceError, WriterClaimHeld
from config.events import emit
from daemon import guard_marks
from daemon.plan import Changes, DeletionGuard, counts, plan
from daemon.registry.base import ApplyResult, Refused, Registry, Snapshot
from discovery import codec, full_entry
from discovery.codec import Entry
from discovery.model import Capabilities
from discovery.normalise import Found, Invalid, Normaliser
from discovery.sources.base import Listing, Source

Encoded = tuple[Capabilities, tuple[object, ...], Entry]
LIST_DEADLINE = 60.0  # seconds a cycle waits for one source's listing


@dataclass
class SourceOutcome:
    name: str
    ok: bool = True
    error: str = ""
    found: int = 0
    invalid: int = 0
    retry_after: float | None = None  # the source's peer asked for this wait (429/503)
    seconds: float = 0.0  # how long its listing took, failed or not (metrics)


@dataclass(frozen=True)
class Conflict:
    worker_id: str
    source: str
    ref: str
    reason: str


@dataclass(frozen=True)
class RegistryReport:
    """One registry's part of a cycle: its plan and what it made of it."""

    name: str
    changes: Changes = field(default_factory=Changes)
    conflicts: tuple[Conflict, ...] = ()
    applied: ApplyResult | None = None
    registry_error: str = ""
    desired: dict[str, Entry] = field(default_factory=dict)
    owned: Mapping[str, Entry] = field(default_factory=dict)  # the snapshot, before apply
    retry_after: float | None = None  # the registry asked for this wait (429/503)
    apply_seconds: float | None = None  # how long its apply took (None: nothing applied)
    claim_held_elsewhere: bool = False  # another writer holds its writer claim

    @property
    def ok(self) -> bool:
        complete = self.applied.complete if self.applied else True
        return not self.registry_error and complete


@dataclass(frozen=True)
class CycleReport:
    sources: tuple[SourceOutcome, ...] = ()
    invalid: tuple[Invalid, ...] = ()
    registries: tuple[RegistryReport, ...] = ()
    dry_run: bool = False
    # The next instant (Unix seconds) at which time alone changes a desired entry: a
    # tool's expiry passing, an attestation ageing out. The daemon runs a cycle then.
    next_change: int | None = None
    # The invalid declarations to log: those new or changed since the last cycle (None:
    # every one). The others are counted, in the summary and /metrics, not logged again.
    invalid_news: tuple[Invalid, ...] | None = None

    @property
    def retry_after(self) -> float | None:
        """The longest wait a peer asked for (``Retry-After``), for the loop's retry."""
        waits = [s.retry_after for s in self.sources if s.retry_after is not None]
        waits += [r.retry_after for r in self.registries if r.retry_after is not None]
        return max(waits, default=None)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.sources) and all(r.ok for r in self.registries)


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


class Syncer:
    def __init__(
        self,
        sources: Sequence[Source],
        registries: Sequence[RegistrySync],
        *,
        listed_once: set[str] | None = None,
        guard_memory: Mapping[tuple[str, ...], GuardMemory] | None = None,
        clock: Callable[[], float] = time.time,
        apply_deadline: float | None = None,
        list_deadline: float = LIST_DEADLINE,
    ) -> None:
        self.sources = list(sources)
        self.clock = clock
        # How long a cycle waits for one source's listing; past it, that source fails
        # alone (its entries kept) while its listing runs on in its own thread.
        self.list_deadline = list_deadline
        self._listing: dict[str, Future[Listing]] = {}
        self._seen: set[tuple[str, str, tuple[tuple[str, str], ...]]] = set()  # invalid, logged
        # With several registries, how long a cycle waits for each one's sync (None: for
        # as long as it takes; the one-shot commands wait).
        self.apply_deadline = apply_deadline
        self.registries = list(registries)
        # Sources that listed successfully since start: the first-sync gate. A reload
        # hands it on, so a new configuration does not reopen the gate's wait.
        self.listed_once: set[str] = set(listed_once or ())
        # A reload hands on each registry's guard memory too (same name, service and
        # owner), so a reload does not reset the high-water marks.
        for target in self.registries:
            if (memory := (guard_memory or {}).get(target.identity)) is not None:
                target.memory = memory
        self._normaliser = Normaliser()
        # id(caps) -> (caps, its changes_at): kept from cycle to cycle (see _changes_at).
        self._times: dict[int, tuple[Capabilities, int | None]] = {}

    @property
    def guard_memory(self) -> dict[tuple[str, ...], GuardMemory]:
        """What a reload hands on to the next Syncer."""
        return {target.identity: target.memory for target in self.registries}

    def run_once(
        self, *, dry_run: bool = False, stop: threading.Event | None = None
    ) -> CycleReport:
        """One cycle; never raises. Anything unexpected (a bug, a library rejecting a
        value while encoding or writing) is a failed cycle the next one retries."""
        try:
            return self._run(dry_run, stop)
        except Exception as exc:  # the daemon outlives any one cycle
            error = unexpected(exc, "cycle")
            return CycleReport(
                registries=tuple(
                    RegistryReport(r.name, registry_error=error) for r in self.registries
                ),
                dry_run=dry_run,
            )

    def _run(self, dry_run: bool, stop: threading.Event | None) -> CycleReport:
        outcomes, found, invalid = self._discover()
        discovered = Discovered(
            found,
            invalid,
            failed={outcome.name for outcome in outcomes if not outcome.ok},
            deletions_open=all(source.name in self.listed_once for source in self.sources),
            now=(now := int(self.clock())),
            changes_at=self._changes_at(found, now),
            released=frozenset() if dry_run else self._released(),
        )
        reports = self._each_registry(
            lambda target: target.sync(discovered, dry_run=dry_run, stop=stop)
        )
        next_change = min((at for at in discovered.changes_at.values() if at), default=None)
        return CycleReport(
            sources=tuple(outcomes),
            invalid=tuple(invalid),
            registries=tuple(reports),
            dry_run=dry_run,
            next_change=next_change,
            invalid_news=self._invalid_news(invalid),
        )

    def _invalid_news(self, invalid: list[Invalid]) -> tuple[Invalid, ...]:
        """The invalid declarations not reported, with these same problems, last cycle."""
        keys = [(item.source, item.error.ref, tuple(item.error.problems)) for item in invalid]
        news = tuple(item for item, key in zip(invalid, keys, strict=True) if key not in self._seen)
        self._seen = set(keys)
        return news

    def _released(self) -> frozenset[Path]:
        """The release files an operator touched, now consumed (only a successful removal
        counts, so a release never sticks). Read once per cycle for all registries, so
        registries sharing a file are all released by it."""
        paths = {
            t.options.release_file
            for t in self.registries
            if t.options.release_file is not None and not t.options.guard.allow
        }
        released = set()
        for path in paths:
            try:
                path.unlink()
            except OSError:
                continue
            released.add(path)
        return frozenset(released)

    def _discover(self) -> tuple[list[SourceOutcome], list[Found], list[Invalid]]:
        outcomes, found, invalid = [], [], []
        for source in self.sources:
            outcome = SourceOutcome(source.name)
            started = time.monotonic()
            try:
                listing = self._list(source)
            except SourceError as exc:
                outcome.ok, outcome.error = False, str(exc)
                outcome.retry_after = exc.retry_after
            except Exception as exc:  # a source's bug is that source's failure
                outcome.ok, outcome.error = False, unexpected(exc, f"source {source.name}")
            else:
                self.listed_once.add(source.name)
                good, bad = self._normaliser.normalise(listing, source.name)
                outcome.found, outcome.invalid = len(good), len(bad)
                found += good
                invalid += bad
            outcome.seconds = time.monotonic() - started
            outcomes.append(outcome)
        return outcomes, found, invalid

    def _list(self, source: Source) -> Listing:
        """``source.list()`` in a thread of its own, waited for ``list_deadline`` seconds:
        a source that hangs (a peer that never answers, a parser stuck on its input)
        fails alone this cycle, and is not listed again until that listing ends."""
        running = self._listing.get(source.name)
        if running is not None and not running.done():
            raise SourceError(
                f"source {source.name}: its listing has not ended since an earlier cycle; "
                "its entries are kept as they are"
            )
        future: Future[Listing] = Future()
        future.set_running_or_notify_cancel()

        def run() -> None:
            try:
                future.set_result(source.list())
            except BaseException as exc:  # handed to the cycle, which names it
                future.set_exception(exc)

        threading.Thread(target=run, daemon=True, name=f"list-{source.name}").start()
        self._listing[source.name] = future
        try:
            return future.result(timeout=self.list_deadline)
        except FutureTimeout:
            raise SourceError(
                f"source {source.name}: no answer within {self.list_deadline:g}s; its "
                "entries are kept as they are"
            ) from None

    def _changes_at(self, found: list[Found], now: int) -> dict[int, int | None]:
        """Each declaration's next change in time. Time only moves on, so an answer that
        is still ahead of ``now`` (or None) is reused for the same, unchanged
        declaration: a steady cycle of a large fleet does not walk every tool again."""
        times: dict[int, tuple[Capabilities, int | None]] = {}
        for item in found:
            key = id(item.caps)
            known = self._times.get(key)
            passed = known is not None and known[1] is not None and known[1] <= now
            if known is None or known[0] is not item.caps or passed:
                known = (item.caps, item.caps.changes_at(now))
            times[key] = known
        self._times = times
        return {key: at for key, (_, at) in times.items()}

    def _each_registry(
        self, sync: Callable[[RegistrySync], RegistryReport]
    ) -> list[RegistryReport]:
        """Every registry at once, each in its own thread: a slow or failing one does not
        hold back the others' writes (its own entries stay as they were)."""
        if len(self.registries) == 1:
            return [sync(self.registries[0])]
        if self.apply_deadline is None:
            with ThreadPoolExecutor(len(self.registries), "registry") as pool:
                return list(pool.map(sync, self.registries))
        return self._each_registry_by_deadline(sync, self.apply_deadline)

    def _each_registry_by_deadline(
        self, sync: Callable[[RegistrySync], RegistryReport], deadline: float
    ) -> list[RegistryReport]:
        """Each registry's sync runs in a thread of its own; the cycle waits ``deadline``
        seconds for them. One still running then is reported "still applying" and goes
        on alone (its outcome is logged when it ends); until it ends, that registry's
        syncs are skipped, so one registry never has two applies at once."""
        started = {
            target.name: target.start(sync) for target in self.registries if target.running is None
        }
        wait(started.values(), timeout=deadline)
        reports = []
        for target in self.registries:
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
                        f"still applying after {deadline:g}s; its entries are synced again once "
                        "it ends"
                    ),
                )
            )
        return reports


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
        # (source, ref) -> (the Capabilities object, where, its entry): an unchanged
        # declaration comes back from the Normaliser as the same object, and is not
        # encoded (and digested) again. Per registry: the entry carries its service
        # and owner.
        self._encoded: dict[tuple[str, str], Encoded] = {}
        # Its sync in a thread of its own, until a cycle takes its report or it ends late.
        self.running: Future[RegistryReport] | None = None

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
        desired, conflicts = self._desired(discovered, snapshot)
        guard = self.options.guard
        if not guard.allow and self.options.release_file in discovered.released:
            guard = replace(guard, allow=True)
        # The guard's marks: this process's memory and what the registry recorded (so a
        # restart or a one-shot run remembers), the higher of the two per scope.
        owned_counts = counts(snapshot.owned.values())
        recorded = guard_marks.read(snapshot.meta, self.options.service)
        kept_marks = guard_marks.live(recorded, discovered.now, guard.window)
        remembered = self.memory.high_water(owned_counts, guard.window)
        changes = plan(
            snapshot.owned,
            desired,
            keep=_kept(snapshot, discovered.failed, discovered.invalid),
            deletions_open=discovered.deletions_open,
            guard=guard,
            high_water={
                scope: max(remembered.get(scope, 0), kept_marks.get(scope, 0))
                for scope in remembered.keys() | kept_marks.keys()
            },
            policy=self.options.policy,
        )
        # Recorded: the most owned before or after this apply.
        after = counts([*_after(snapshot.owned, changes.delete), *changes.create])
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
        encoded: dict[tuple[str, str], Encoded] = {}
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
                desired[folded] = self._encode(item, encoded, discovered)
        self._encoded = encoded
        return desired, conflicts

    def _encode(
        self, item: Found, encoded: dict[tuple[str, str], Encoded], discovered: Discovered
    ) -> Entry:
        decl, now = item.declaration, discovered.now
        # Which tools are live is part of the entry: a cached one is reused only while
        # time has changed nothing about it.
        where = (
            self.options.service,
            self.options.owner,
            decl.address,
            discovered.changes_at[id(item.caps)],
        )
        cached = self._encoded.get((decl.source, decl.ref))
        if cached is not None and cached[0] is item.caps and cached[1] == where:
            entry: Entry = cached[2]
        else:
            entry = full_entry.encode(
                item.caps,
                now=now,
                service=self.options.service,
                owner=self.options.owner,
                source=decl.source,
                ref=decl.ref,
                address=decl.address,
            )
        encoded[(decl.source, decl.ref)] = (item.caps, where, entry)
        return entry


def unexpected(exc: BaseException, where: str) -> str:
    """An exception nobody raised on purpose, as one short line for the error report;
    its traceback goes to the debug log (one line, JSON-quoted)."""
    emit(
        logging.DEBUG, "traceback", where=where, traceback="".join(traceback.format_exception(exc))
    )
    text = " ".join(str(exc).split())[:300]
    return f"unexpected {type(exc).__name__}" + (f": {text}" if text else "")


def _conflict(refused: Refused, desired: Mapping[str, Entry]) -> Conflict:
    """An id the store found held by another writer when it wrote (planted since the
    snapshot, or a key no snapshot lists): a conflict like those the snapshot shows."""
    entry = desired.get(refused.id.casefold())
    source, ref = (entry.source, entry.ref) if entry is not None else ("", "")
    return Conflict(refused.id, source, ref, refused.reason)


def _after(owned: Mapping[str, Entry], deleted: Sequence[Entry]) -> list[Entry]:
    """The owned entries an apply of ``deleted`` leaves."""
    gone = {entry.id.casefold() for entry in deleted}
    return [entry for entry in owned.values() if entry.id.casefold() not in gone]


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
