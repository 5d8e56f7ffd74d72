"""The cycle's own safety (issue 22): every source listing has a deadline (one that does
not answer fails alone, its entries frozen, while the cycle goes on for the others), and
an invalid declaration is logged when it appears or changes, not every cycle."""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
import weakref
from dataclasses import dataclass, field

import pytest

from daemon import collector
from daemon.cycle import Deadlines, Syncer
from daemon.registry.memory import MemoryRegistry
from daemon.registry.ownership import Ownership
from daemon.registry_sync import RegistrySync, SyncOptions
from daemon.report import log_problems, summary
from discovery.normalise import Normaliser
from discovery.sources.base import Listing, from_text
from tests.scripted_source import ScriptedSource
from tests.test_registry_contract import declared


@dataclass
class HangingSource(ScriptedSource):
    """Lists normally until ``hang`` is set; then blocks until ``release`` is."""

    hang: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def list(self) -> Listing:
        if self.hang.is_set():
            self.release.wait()
        return super().list()


def test_a_source_that_never_answers_fails_alone_and_its_entries_are_kept() -> None:
    slow = HangingSource("slow", declarations=declared("s-1", "s-2"))
    quick = ScriptedSource("quick", declarations=declared("q-1"))
    registry = MemoryRegistry(Ownership(service="worker", owner="me", node="capsync-me"))
    target = RegistrySync("memory", registry, SyncOptions(service="worker", owner="me"))
    sync = Syncer([slow, quick], [target], deadlines=Deadlines(list=0.2))
    assert sync.run_once().ok
    slow.hang.set()
    slow.declarations = []  # were it read, its entries would go
    quick.declarations = declared("q-1", "q-2")
    try:
        report = sync.run_once()
        failed = {s.name: s.error for s in report.sources if not s.ok}
        assert list(failed) == ["slow"] and "no answer within 0.2s" in failed["slow"]
        changes = report.registries[0].changes
        assert [e.id for e in changes.create] == ["q-2"] and not changes.delete
        assert changes.kept == 2
        again = sync.run_once()  # not listed twice at once
        [stuck] = [s for s in again.sources if not s.ok]
        assert "has not ended since an earlier cycle" in stuck.error
    finally:
        slow.release.set()
    assert sorted(registry.snapshot().owned) == ["q-1", "q-2", "s-1", "s-2"]


def test_an_invalid_declaration_is_logged_when_it_appears_or_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = ScriptedSource(declarations=[{"id": "bad", "flags": {"f": "yes"}}])
    registry = MemoryRegistry(Ownership(service="worker", owner="me", node="capsync-me"))
    target = RegistrySync("memory", registry, SyncOptions(service="worker", owner="me"))
    sync = Syncer([source], [target])

    def logged() -> int:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            report = sync.run_once()
            log_problems(report)
        assert "1 invalid" in summary(report)  # counted every cycle
        return sum(r.getMessage() == "invalid_declaration" for r in caplog.records)

    assert logged() == 1
    assert logged() == 0  # the same problem: not logged again
    source.declarations = [{"id": "bad", "flags": {"f": "no"}, "metadata": {"k": 1}}]
    assert logged() == 2  # changed: its problems are logged again
    assert logged() == 0


@dataclass
class _Labels:
    """A source that lists fresh declarations held as raw text each time (as the Docker,
    Kubernetes and Consul sources do), fingerprinted by that text."""

    texts: dict[str, str]
    name: str = "labels"

    def list(self) -> Listing:
        return Listing([from_text(self.name, ref, text) for ref, text in self.texts.items()])

    def close(self) -> None:
        """Nothing held."""


def test_a_relisted_unchanged_source_is_reused_and_a_changed_text_is_seen() -> None:
    """A listing whose every declaration is the remembered one at the same place hands
    back what the last one gave (the cycle reuses its plan); a changed text, a new or
    a removed declaration is planned again."""
    texts = {f"c-{i}": json.dumps({"id": f"w-{i}"}) for i in range(3)}
    source = _Labels(texts)
    normaliser = Normaliser()
    first, _ = normaliser.normalise(source.list(), source.name)
    assert normaliser.normalise(source.list(), source.name)[0] is first
    registry = MemoryRegistry(Ownership(service="worker", owner="me", node="capsync-me"))
    sync = Syncer([source], [RegistrySync("r", registry, SyncOptions("worker", "me"))])
    assert len(sync.run_once().registries[0].changes.create) == 3
    for _ in range(2):
        assert sync.run_once().registries[0].changes.unchanged == 3
    texts["c-1"] = json.dumps({"id": "w-1", "metadata": {"pool": "b"}})
    assert [u.new.id for u in sync.run_once().registries[0].changes.update] == ["w-1"]
    del texts["c-2"]
    assert [e.id for e in sync.run_once().registries[0].changes.delete] == ["w-2"]
    texts["c-2"] = json.dumps({"id": "w-2"})
    assert [e.id for e in sync.run_once().registries[0].changes.create] == ["w-2"]
    assert sync.run_once().registries[0].changes.unchanged == 3


@dataclass
class _Probe(ScriptedSource):
    """Records whether the cyclic collector ran automatically while it listed."""

    seen: list[bool] = field(default_factory=list)
    boom: bool = False

    def list(self) -> Listing:
        self.seen.append(gc.isenabled())
        if self.boom:
            raise RuntimeError("a source's bug")
        return super().list()


def test_a_cycle_pauses_the_cyclic_collector_and_always_turns_it_back_on() -> None:
    """Collection is paused for the cycle's work (records freed by reference counting),
    on again after it, a failed cycle included; one that was off stays off."""
    source = _Probe(declarations=[{"id": "w-1"}])
    registry = MemoryRegistry(Ownership(service="worker", owner="me", node="capsync-me"))
    sync = Syncer([source], [RegistrySync("r", registry, SyncOptions("worker", "me"))])
    assert gc.isenabled()
    assert len(sync.run_once().registries[0].changes.create) == 1
    assert gc.isenabled()
    source.boom = True
    assert not sync.run_once().sources[0].ok
    assert gc.isenabled()
    assert source.seen == [False, False]
    gc.disable()
    try:
        frozen = gc.get_freeze_count()
        sync.run_once()
        assert not gc.isenabled()
        assert gc.get_freeze_count() <= frozen  # nothing frozen by a cycle it did not pause
    finally:
        gc.enable()


class _Ring:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_what_a_cycle_leaves_is_frozen_and_cyclic_garbage_in_it_is_freed_in_time() -> None:
    """The collector's later passes skip what was alive when a cycle ended (the daemon's
    long-lived state); cyclic garbage among it waits for the next full collection, at
    most ``FULL_SECONDS`` later, and is freed then."""
    registry = MemoryRegistry(Ownership(service="worker", owner="me", node="capsync-me"))
    sync = Syncer(
        [_Probe(declarations=[{"id": "w-1"}])],
        [RegistrySync("r", registry, SyncOptions("worker", "me"))],
    )
    ring = _Ring()
    gone = weakref.ref(ring)
    try:
        sync.run_once()
        assert gc.get_freeze_count() > 0
        del ring
        gc.collect()
        assert gone() is not None  # frozen: it waits for the full collection
        collector.settle(time.monotonic() + collector.FULL_SECONDS)
        assert gone() is None
    finally:
        gc.unfreeze()
