"""One sync cycle, read as the pipeline: registry -> sources -> normalise -> plan -> apply.

``Syncer`` keeps the little state that spans cycles: which sources have listed since
start (the first-sync gate) and the owned counts of recent cycles (the deletion guard's
high-water marks, in memory: a restart starts them afresh). Everything else is recomputed
each cycle, so a failed or interrupted apply is repaired by the next one.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from config.errors import RegistryError, SourceError
from daemon.plan import Changes, DeletionGuard, counts, plan
from daemon.registry.base import ApplyResult, Registry, Snapshot
from discovery import codec
from discovery.codec import Entry
from discovery.model import Capabilities
from discovery.normalise import Found, Invalid, Normaliser
from discovery.sources.base import Source

Encoded = tuple[Capabilities, tuple[str, str, str], Entry]


@dataclass
class SourceOutcome:
    name: str
    ok: bool = True
    error: str = ""
    found: int = 0
    invalid: int = 0
    retry_after: float | None = None  # the source's peer asked for this wait (429/503)


@dataclass(frozen=True)
class Conflict:
    worker_id: str
    source: str
    ref: str
    reason: str


@dataclass(frozen=True)
class CycleReport:
    changes: Changes = field(default_factory=Changes)
    sources: tuple[SourceOutcome, ...] = ()
    invalid: tuple[Invalid, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    applied: ApplyResult | None = None
    registry_error: str = ""
    dry_run: bool = False
    desired: dict[str, Entry] = field(default_factory=dict)
    registry_retry_after: float | None = None

    @property
    def retry_after(self) -> float | None:
        """The longest wait a peer asked for (``Retry-After``), for the loop's retry."""
        waits = [s.retry_after for s in self.sources if s.retry_after is not None]
        if self.registry_retry_after is not None:
            waits.append(self.registry_retry_after)
        return max(waits, default=None)

    @property
    def ok(self) -> bool:
        complete = self.applied.complete if self.applied else True
        return not self.registry_error and all(s.ok for s in self.sources) and complete


@dataclass(frozen=True)
class SyncOptions:
    service: str
    owner: str
    policy: str = "sync"
    guard: DeletionGuard = field(default_factory=DeletionGuard)
    # Removing this file (``touch`` it) releases held deletions for one cycle.
    release_file: Path | None = None


class Syncer:
    def __init__(self, sources: Sequence[Source], registry: Registry, options: SyncOptions,
                 *, listed_once: set[str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sources = list(sources)
        self.registry = registry
        self.options = options
        # Sources that listed successfully since start: the first-sync gate. A reload
        # hands it on, so a new configuration does not reopen the gate's wait.
        self.listed_once: set[str] = set(listed_once or ())
        self._normaliser = Normaliser()
        # (source, ref) -> (the Capabilities object, where, its entry): an unchanged
        # declaration comes back from the Normaliser as the same object, and is not
        # encoded (and digested) again.
        self._encoded: dict[tuple[str, str], Encoded] = {}
        self._clock = clock
        # (when, owned entries per guard scope) of recent cycles, oldest first.
        self._marks: deque[tuple[float, dict[str, int]]] = deque()

    def run_once(
        self, *, dry_run: bool = False, stop: threading.Event | None = None
    ) -> CycleReport:
        try:
            snapshot = self.registry.snapshot()
        except RegistryError as exc:
            return CycleReport(registry_error=str(exc), dry_run=dry_run,
                               registry_retry_after=exc.retry_after)
        outcomes, found, invalid = self._discover()
        desired, conflicts = self._desired(found, snapshot)
        failed = {outcome.name for outcome in outcomes if not outcome.ok}
        guard = self.options.guard
        if not dry_run and not guard.allow and self._released():
            guard = replace(guard, allow=True)
        changes = plan(
            snapshot.owned,
            desired,
            keep=_kept(snapshot, failed, invalid),
            deletions_open=all(source.name in self.listed_once for source in self.sources),
            guard=guard,
            high_water=self._high_water(counts(snapshot.owned.values())),
            policy=self.options.policy,
        )
        if guard.allow and changes.delete and not dry_run:
            self._marks.clear()  # an allowed mass deletion is the new baseline
        report = CycleReport(
            changes=changes, sources=tuple(outcomes), invalid=tuple(invalid),
            conflicts=tuple(conflicts), dry_run=dry_run, desired=desired,
        )
        if dry_run or not changes.writes:
            return report
        try:
            applied = self.registry.apply(changes, stop)
        except RegistryError as exc:
            return replace(report, registry_error=str(exc), registry_retry_after=exc.retry_after)
        return replace(report, applied=applied)

    def _high_water(self, current: dict[str, int]) -> dict[str, int]:
        """Record this cycle's owned counts; the most seen per scope within the window."""
        now = self._clock()
        self._marks.append((now, current))
        while self._marks[0][0] < now - self.options.guard.window:
            self._marks.popleft()
        marks: dict[str, int] = {}
        for _, sample in self._marks:
            for scope, count in sample.items():
                marks[scope] = max(marks.get(scope, 0), count)
        return marks

    def _released(self) -> bool:
        """An operator released held deletions: the release file was there, and is now
        consumed (only a successful removal counts, so a release never sticks)."""
        if self.options.release_file is None:
            return False
        try:
            self.options.release_file.unlink()
        except OSError:
            return False
        return True

    def _discover(self) -> tuple[list[SourceOutcome], list[Found], list[Invalid]]:
        outcomes, found, invalid = [], [], []
        for source in self.sources:
            outcome = SourceOutcome(source.name)
            try:
                listing = source.list()
            except SourceError as exc:
                outcome.ok, outcome.error = False, str(exc)
                outcome.retry_after = exc.retry_after
            else:
                self.listed_once.add(source.name)
                good, bad = self._normaliser.normalise(listing, source.name)
                outcome.found, outcome.invalid = len(good), len(bad)
                found += good
                invalid += bad
            outcomes.append(outcome)
        return outcomes, found, invalid

    def _desired(
        self, found: list[Found], snapshot: Snapshot
    ) -> tuple[dict[str, Entry], list[Conflict]]:
        """Encode every declaration; the first source (config order) wins a shared id.

        Ids compare case-folded, as the registries compare them: ``W1`` after ``w1`` is
        a conflict, and so is an id another writer holds in any case.
        """
        desired: dict[str, Entry] = {}
        conflicts = []
        encoded: dict[tuple[str, str], Encoded] = {}
        for item in found:
            decl, worker_id = item.declaration, item.caps.id
            folded = worker_id.casefold()
            if folded in desired:
                winner = desired[folded]
                conflicts.append(Conflict(worker_id, decl.source, decl.ref,
                                          f"{winner.id!r} already declared by {winner.source} "
                                          f"{winner.ref} (ids compare case-insensitively)"))
            elif folded in snapshot.foreign:
                conflicts.append(Conflict(worker_id, decl.source, decl.ref,
                                          "another writer (owner or service) registered this "
                                          "id, in some letter case, on capsync's node"))
            else:
                desired[folded] = self._encode(item, encoded)
        self._encoded = encoded
        return desired, conflicts

    def _encode(self, item: Found, encoded: dict[tuple[str, str], Encoded]) -> Entry:
        decl = item.declaration
        where = (self.options.service, self.options.owner, decl.address)
        cached = self._encoded.get((decl.source, decl.ref))
        if cached is not None and cached[0] is item.caps and cached[1] == where:
            entry: Entry = cached[2]
        else:
            entry = codec.encode(item.caps, service=self.options.service,
                                 owner=self.options.owner, source=decl.source, ref=decl.ref,
                                 address=decl.address)
        encoded[(decl.source, decl.ref)] = (item.caps, where, entry)
        return entry


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

