"""One sync cycle, read as the pipeline: sources -> normalise, then for each registry
(at once, in threads): snapshot -> plan -> apply.

``Syncer`` keeps the little state that spans cycles: which sources have listed since
start (the first-sync gate) and, per registry, the owned counts of recent cycles (the
deletion guard's memory, ``GuardMemory``: a reload hands both on, a restart starts them
afresh). Everything else is recomputed each cycle, so a failed or interrupted apply is
repaired by the next one.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from pathlib import Path

from config.errors import SourceError
from daemon import collector, kept_entries
from daemon.cycle_report import CycleReport, RegistryReport, SourceOutcome, unexpected
from daemon.kept_entries import KeptEntries
from daemon.registry_sync import Discovered, GuardMemory, RegistrySync, each_registry
from discovery.health import Damper
from discovery.model import Capabilities
from discovery.normalise import Found, Invalid, Normaliser
from discovery.sources.base import Listing, Source

LIST_DEADLINE = 60.0  # seconds a cycle waits for one source's listing


@dataclass(frozen=True)
class Deadlines:
    """How long a cycle waits. For one source's listing: past it, that source fails
    alone (its entries kept) while its listing runs on in its own thread. With several
    registries, for each one's sync (None: as long as it takes; the one-shot commands
    wait)."""

    list: float = LIST_DEADLINE
    apply: float | None = None


@dataclass(frozen=True)
class Handover:
    """What a reload hands on to the next Syncer: the sources that listed successfully
    since start (the first-sync gate: a new configuration does not reopen its wait) and
    each registry's guard memory (by name, service and owner: a reload does not reset
    the high-water marks)."""

    listed_once: frozenset[str] = frozenset()
    guard_memory: Mapping[tuple[str, ...], GuardMemory] = field(default_factory=dict)
    # Each worker's shown health and since when (the damping goes on across a reload).
    damper: Damper | None = None
    # What was validated (a reload validates nothing again that did not change); a new
    # process's starts from the file in the state directory (daemon/wiring.py).
    normaliser: Normaliser | None = None


class Syncer:
    def __init__(
        self,
        sources: Sequence[Source],
        registries: Sequence[RegistrySync],
        *,
        handover: Handover | None = None,
        deadlines: Deadlines | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sources = list(sources)
        self.clock = clock
        self.deadlines = deadlines or Deadlines()
        self._listing: dict[str, Future[Listing]] = {}
        self._seen: set[tuple[str, str, tuple[tuple[str, str], ...]]] = set()  # invalid, logged
        self.registries = list(registries)
        handover = handover or Handover()
        self.listed_once: set[str] = set(handover.listed_once)
        for target in self.registries:
            if (memory := handover.guard_memory.get(target.identity)) is not None:
                target.memory = memory
        self._normaliser = handover.normaliser or Normaliser()
        # The encoded entries on disk, beside the validations (and off with them).
        self._entries = KeptEntries.beside(self._normaliser.validations)
        self._kept_times = True  # the first cycle asks the file for changes_at
        for target in self.registries:
            target.kept_entries = self._entries
        # Its minimum time in a state is the daemon's setting (0 until set: undamped).
        self.damper = handover.damper or Damper()
        # id(caps) -> (caps, its changes_at): kept from cycle to cycle (see _changes_at).
        self._times: dict[int, tuple[Capabilities, int | None]] = {}
        # The last cycle's discovery, handed on as the same objects while every source
        # gave the same lists (see _discover and _changes_at).
        self._parts: list[tuple[str, list[Found], list[Invalid]]] = []
        self._found: list[Found] = []
        self._invalid: list[Invalid] = []
        self._at: tuple[list[Found], dict[int, int | None], int | None] | None = None
        # The damper's last input and what it showed, while it holds no change back: the
        # same input is then shown the same (nothing is due), without a walk.
        self._settled: tuple[list[Found], list[Found]] | None = None

    @property
    def handover(self) -> Handover:
        """What a reload hands on to the next Syncer."""
        return Handover(
            frozenset(self.listed_once),
            {target.identity: target.memory for target in self.registries},
            self.damper,
            self._normaliser,
        )

    def run_once(
        self, *, dry_run: bool = False, stop: threading.Event | None = None
    ) -> CycleReport:
        """One cycle; never raises. Anything unexpected (a bug, a library rejecting a
        value while encoding or writing) is a failed cycle the next one retries."""
        try:
            with collector.paused():
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
        clock = self.clock()
        found, health_due = self._damp(found, clock, dry_run)
        now = int(clock)
        changes_at, next_change = self._changes_at(found, now)
        discovered = Discovered(
            found,
            invalid,
            failed={outcome.name for outcome in outcomes if not outcome.ok},
            deletions_open=all(source.name in self.listed_once for source in self.sources),
            now=now,
            changes_at=changes_at,
            released=frozenset() if dry_run else self._released(),
        )
        reports = each_registry(
            self.registries,
            lambda target: target.sync(discovered, dry_run=dry_run, stop=stop),
            self.deadlines.apply,
        )
        self._normaliser.save()
        kept_entries.save(self._entries, self.registries)
        if health_due:
            next_change = min(at for at in (next_change, math.ceil(health_due)) if at)
        return CycleReport(
            sources=tuple(outcomes),
            invalid=tuple(invalid),
            registries=tuple(reports),
            dry_run=dry_run,
            next_change=next_change,
            invalid_news=self._invalid_news(invalid),
        )

    def _damp(
        self, found: list[Found], now: float, dry_run: bool
    ) -> tuple[list[Found], float | None]:
        """Each worker's health as the damper shows it (a dry run changes no memory), and
        when a held change is next due. A steady fleet costs one comparison per worker; the
        very list of last cycle, with nothing held back, costs nothing."""
        if self._settled is not None and self._settled[0] is found:
            return self._settled[1], None
        damper = self.damper if not dry_run else copy.deepcopy(self.damper)
        keys = [(item.declaration.source, item.declaration.ref) for item in found]
        shown, due = damper.settle(
            {key: item.declaration.health for key, item in zip(keys, found, strict=True)}, now
        )
        settled = [
            item
            if (health := shown[key]) is item.declaration.health
            or health == item.declaration.health
            else Found(item.caps, replace(item.declaration, health=health))
            for key, item in zip(keys, found, strict=True)
        ]
        # Nothing held back: the very same list, so a steady cycle's reuse still holds.
        same = all(new is old for new, old in zip(settled, found, strict=True))
        result = found if same else settled
        if not dry_run:
            self._settled = (found, result) if due is None else None
        return result, due

    def close(self) -> None:
        """Write what was validated and encoded since the last write: the next process
        starts from it."""
        self._normaliser.save(now=True)
        kept_entries.save(self._entries, self.registries, now=True)

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
        """Every source's declarations; the same list objects as last cycle when every
        source listed and normalised to the very same lists (nothing changed)."""
        outcomes, found, invalid = [], [], []
        parts: list[tuple[str, list[Found], list[Invalid]]] = []
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
                parts.append((source.name, good, bad))
            outcome.seconds = time.monotonic() - started
            outcomes.append(outcome)
        if len(parts) == len(self._parts) and all(
            name == old[0] and good is old[1] and bad is old[2]
            for (name, good, bad), old in zip(parts, self._parts, strict=True)
        ):
            return outcomes, self._found, self._invalid
        self._parts, self._found, self._invalid = parts, found, invalid
        return outcomes, found, invalid

    def _list(self, source: Source) -> Listing:
        """``source.list()`` in a thread of its own, waited for ``deadlines.list`` seconds:
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
            listing = future.result(timeout=self.deadlines.list)
        except FutureTimeout:
            raise SourceError(
                f"source {source.name}: no answer within {self.deadlines.list:g}s; its "
                "entries are kept as they are"
            ) from None
        # An ended listing is not kept: its future would hold every parsed body (the
        # largest thing a first cycle reads) until the source's next listing.
        del self._listing[source.name]
        return listing

    def _changes_at(self, found: list[Found], now: int) -> tuple[dict[int, int | None], int | None]:
        """Each declaration's next change in time, and the earliest of them. Time only
        moves on, so an answer that is still ahead of ``now`` (or None) is reused for
        the same, unchanged declaration: a steady cycle of a large fleet does not walk
        every tool again, nor (the same declarations, none due) even every item."""
        if self._at is not None and self._at[0] is found and (self._at[2] or now + 1) > now:
            return self._at[1], self._at[2]
        times: dict[int, tuple[Capabilities, int | None]] = {}
        kept = self._entries.times() if self._kept_times else {}
        self._kept_times = False
        for item in found:
            key = id(item.caps)
            known = self._times.get(key)
            passed = known is not None and known[1] is not None and known[1] <= now
            if known is None or known[0] is not item.caps or passed:
                known = (item.caps, kept_entries.changes_at(kept, item, now))
            times[key] = known
        self._times = times
        changes_at = {key: at for key, (_, at) in times.items()}
        next_change = min((at for at in changes_at.values() if at), default=None)
        self._at = (found, changes_at, next_change)
        return changes_at, next_change
