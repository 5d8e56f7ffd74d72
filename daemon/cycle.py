"""One sync cycle, read as the pipeline: sources -> normalise, then for each registry
(at once, in threads): snapshot -> plan -> apply.

``Syncer`` keeps the little state that spans cycles (which sources have listed since
start, for the first-sync gate); everything else is recomputed each cycle, so a failed or
interrupted apply is repaired by the next one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from config.errors import RegistryError, SourceError
from daemon.plan import Changes, DeletionGuard, plan
from daemon.registry.base import ApplyResult, Registry, Snapshot
from discovery import codec, full_entry
from discovery.codec import Entry
from discovery.model import Capabilities
from discovery.normalise import Found, Invalid, Normaliser
from discovery.sources.base import Source

Encoded = tuple[Capabilities, tuple[object, ...], Entry]


@dataclass
class SourceOutcome:
    name: str
    ok: bool = True
    error: str = ""
    found: int = 0
    invalid: int = 0


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

    @property
    def ok(self) -> bool:
        return not self.registry_error and not (self.applied.refused if self.applied else ())


@dataclass(frozen=True)
class CycleReport:
    sources: tuple[SourceOutcome, ...] = ()
    invalid: tuple[Invalid, ...] = ()
    registries: tuple[RegistryReport, ...] = ()
    dry_run: bool = False
    # The next instant (Unix seconds) at which time alone changes a desired entry: a
    # tool's expiry passing, an attestation ageing out. The daemon runs a cycle then.
    next_change: int | None = None

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


@dataclass(frozen=True)
class SyncOptions:
    service: str
    owner: str
    policy: str = "sync"
    guard: DeletionGuard = field(default_factory=DeletionGuard)


class Syncer:
    def __init__(self, sources: Sequence[Source], registries: Sequence[RegistrySync],
                 *, listed_once: set[str] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.sources = list(sources)
        self.clock = clock
        self.registries = list(registries)
        # Sources that listed successfully since start: the first-sync gate. A reload
        # hands it on, so a new configuration does not reopen the gate's wait.
        self.listed_once: set[str] = set(listed_once or ())
        self._normaliser = Normaliser()

    def run_once(
        self, *, dry_run: bool = False, stop: threading.Event | None = None
    ) -> CycleReport:
        outcomes, found, invalid = self._discover()
        discovered = Discovered(
            found, invalid,
            failed={outcome.name for outcome in outcomes if not outcome.ok},
            deletions_open=all(source.name in self.listed_once for source in self.sources),
            now=int(self.clock()),
        )
        reports = self._each_registry(
            lambda target: target.sync(discovered, dry_run=dry_run, stop=stop)
        )
        next_change = min(
            (at for item in found if (at := item.caps.changes_at(discovered.now))), default=None
        )
        return CycleReport(sources=tuple(outcomes), invalid=tuple(invalid),
                           registries=tuple(reports), dry_run=dry_run, next_change=next_change)

    def _discover(self) -> tuple[list[SourceOutcome], list[Found], list[Invalid]]:
        outcomes, found, invalid = [], [], []
        for source in self.sources:
            outcome = SourceOutcome(source.name)
            try:
                listing = source.list()
            except SourceError as exc:
                outcome.ok, outcome.error = False, str(exc)
            else:
                self.listed_once.add(source.name)
                good, bad = self._normaliser.normalise(listing, source.name)
                outcome.found, outcome.invalid = len(good), len(bad)
                found += good
                invalid += bad
            outcomes.append(outcome)
        return outcomes, found, invalid

    def _each_registry(
        self, sync: Callable[[RegistrySync], RegistryReport]
    ) -> list[RegistryReport]:
        """Every registry at once, each in its own thread: a slow or failing one does not
        hold back the others' writes (its own entries stay as they were)."""
        if len(self.registries) == 1:
            return [sync(self.registries[0])]
        with ThreadPoolExecutor(len(self.registries), "registry") as pool:
            return list(pool.map(sync, self.registries))


class RegistrySync:
    """One registry's half of the cycle: its snapshot, its plan (with its own guard and
    policy) and its apply."""

    def __init__(self, name: str, registry: Registry, options: SyncOptions) -> None:
        self.name = name
        self.registry = registry
        self.options = options
        # (source, ref) -> (the Capabilities object, where, its entry): an unchanged
        # declaration comes back from the Normaliser as the same object, and is not
        # encoded (and digested) again. Per registry: the entry carries its service
        # and owner.
        self._encoded: dict[tuple[str, str], Encoded] = {}

    def sync(self, discovered: Discovered, *, dry_run: bool,
             stop: threading.Event | None) -> RegistryReport:
        try:
            snapshot = self.registry.snapshot()
        except RegistryError as exc:
            return RegistryReport(self.name, registry_error=str(exc))
        desired, conflicts = self._desired(discovered.found, snapshot, discovered.now)
        changes = plan(
            snapshot.owned,
            desired,
            keep=_kept(snapshot, discovered.failed, discovered.invalid),
            deletions_open=discovered.deletions_open,
            guard=self.options.guard,
            policy=self.options.policy,
        )
        report = RegistryReport(self.name, changes=changes, conflicts=tuple(conflicts),
                                desired=desired)
        if dry_run or not changes.writes:
            return report
        try:
            applied = self.registry.apply(changes, stop)
        except RegistryError as exc:
            return replace(report, registry_error=str(exc))
        return replace(report, applied=applied)

    def _desired(
        self, found: list[Found], snapshot: Snapshot, now: int
    ) -> tuple[dict[str, Entry], list[Conflict]]:
        """Encode every declaration; the first source (config order) wins a shared id."""
        desired: dict[str, Entry] = {}
        conflicts = []
        encoded: dict[tuple[str, str], Encoded] = {}
        for item in found:
            decl, worker_id = item.declaration, item.caps.id
            if worker_id in desired:
                winner = desired[worker_id]
                conflicts.append(Conflict(worker_id, decl.source, decl.ref,
                                          f"already declared by {winner.source} {winner.ref}"))
            elif worker_id in snapshot.foreign:
                conflicts.append(Conflict(worker_id, decl.source, decl.ref,
                                          "another writer registered this id on capsync's node"))
            else:
                desired[worker_id] = self._encode(item, encoded, now)
        self._encoded = encoded
        return desired, conflicts

    def _encode(self, item: Found, encoded: dict[tuple[str, str], Encoded], now: int) -> Entry:
        decl = item.declaration
        # Which tools are live is part of the entry: a cached one is reused only while
        # time has changed nothing about it.
        where = (self.options.service, self.options.owner, decl.address,
                 item.caps.changes_at(now))
        cached = self._encoded.get((decl.source, decl.ref))
        if cached is not None and cached[0] is item.caps and cached[1] == where:
            entry: Entry = cached[2]
        else:
            entry = full_entry.encode(item.caps, now=now, service=self.options.service,
                                      owner=self.options.owner, source=decl.source,
                                      ref=decl.ref, address=decl.address)
        encoded[(decl.source, decl.ref)] = (item.caps, where, entry)
        return entry


def _kept(snapshot: Snapshot, failed: set[str], invalid: list[Invalid]) -> set[str]:
    """Owned entries to leave exactly as they are: their source failed, or their
    declaration (same source, same id or same reference) is invalid this cycle."""
    bad_ids = {(item.source, item.worker_id) for item in invalid if item.worker_id}
    bad_refs = {(item.source, item.ref[: codec.MAX_META_VALUE]) for item in invalid}
    return {
        worker_id
        for worker_id, entry in snapshot.owned.items()
        if entry.source in failed
        or (entry.source, worker_id) in bad_ids
        or (entry.source, entry.ref) in bad_refs
    }

