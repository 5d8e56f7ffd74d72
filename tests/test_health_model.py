"""The health model: beside the declaration, never in its digest; a health-only change
is a health update (no re-validation, no rewrite); damping holds flaps back."""

from __future__ import annotations

import pytest

from daemon.cycle import Handover, Syncer
from daemon.events import EventBus, publish
from daemon.plan import Restraints, plan
from daemon.registry.memory import MemoryCatalog, MemoryRegistry
from daemon.registry.ownership import Ownership
from daemon.registry_sync import RegistrySync, SyncOptions
from discovery import schema
from discovery.codec import DIGEST, Entry
from discovery.health import PASSING, Damper, Health, worst
from tests.scripted_source import ScriptedSource

CRITICAL = Health("critical", "docker: unhealthy (3 failed probes)")
WARNING = Health("warning", "websocket: disconnected, in grace")
KEEPS_HEALTH = Restraints(health=True)


def entry(worker_id: str, health: Health = PASSING) -> Entry:
    meta = {"capsync-owner": "me", "capsync-source": "file"}
    return Entry(worker_id, "worker", ("clippy",), meta, health=health)


def test_health_is_not_part_of_an_entry_s_equality() -> None:
    assert entry("w1") == entry("w1", CRITICAL)


def test_a_health_only_change_is_a_health_update_not_an_update() -> None:
    changes = plan({"w1": entry("w1")}, {"w1": entry("w1", CRITICAL)}, restraints=KEEPS_HEALTH)
    assert (changes.create, changes.update, changes.delete) == ((), (), ())
    assert [u.new.health for u in changes.health] == [CRITICAL]
    assert changes.writes == 1 and changes.health_changes == 1


def test_only_the_status_decides_a_health_change() -> None:
    reworded = Health("critical", "docker: unhealthy (4 failed probes)")
    changes = plan(
        {"w1": entry("w1", CRITICAL)}, {"w1": entry("w1", reworded)}, restraints=KEEPS_HEALTH
    )
    assert changes.writes == 0 and changes.unchanged == 1


def test_a_registry_that_keeps_no_health_plans_none() -> None:
    changes = plan({"w1": entry("w1")}, {"w1": entry("w1", CRITICAL)})
    assert changes.writes == 0 and changes.unchanged == 1


def test_the_worst_signal_wins() -> None:
    assert worst(PASSING, WARNING, CRITICAL) == CRITICAL
    assert worst() == PASSING


def test_damping_shows_the_first_health_at_once_and_holds_a_flap() -> None:
    damper = Damper(min_seconds=10)
    assert damper.settle({"w": PASSING}, now=0) == ({"w": PASSING}, None)
    # held long enough: a change shows at once
    assert damper.settle({"w": CRITICAL}, now=20) == ({"w": CRITICAL}, None)
    # flapping back within 10 s is held until 30, then shown
    assert damper.settle({"w": PASSING}, now=21) == ({"w": CRITICAL}, 30)
    assert damper.settle({"w": CRITICAL}, now=25) == ({"w": CRITICAL}, None)
    assert damper.settle({"w": PASSING}, now=29) == ({"w": CRITICAL}, 30)
    assert damper.settle({"w": PASSING}, now=30) == ({"w": PASSING}, None)


def test_a_worker_no_longer_reported_is_forgotten() -> None:
    damper = Damper(min_seconds=10)
    damper.settle({"w": CRITICAL}, now=0)
    damper.settle({}, now=1)
    assert damper.settle({"w": PASSING}, now=2) == ({"w": PASSING}, None)


def _sync(catalog: MemoryCatalog) -> RegistrySync:
    registry = MemoryRegistry(Ownership(service="worker", owner="me", node="capsync-me"), catalog)
    return RegistrySync("memory", registry, SyncOptions(service="worker", owner="me"))


def _damped(syncer: Syncer, seconds: float = 30) -> Syncer:
    syncer.damper.min_seconds = seconds
    return syncer


def _owned(catalog: MemoryCatalog) -> dict[str, Entry]:
    return dict(catalog.nodes["capsync-me"].services)


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = schema.validate

    def counting(data: object, **kwargs: object) -> object:
        seen.append(str(kwargs.get("ref")))
        return real(data, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(schema, "validate", counting)
    return seen


def test_a_health_change_costs_no_validation_and_no_rewrite(validations: list[str]) -> None:
    catalog = MemoryCatalog()
    source = ScriptedSource(
        declarations=[{"id": "w1", "static_analysis_tools": [{"tool_name": "clippy"}]}],
        as_text=True,
    )
    syncer = Syncer([source], [_sync(catalog)])
    syncer.run_once()
    before = _owned(catalog)["w1"]
    assert validations == ["scripted/w1"]

    source.health["w1"] = CRITICAL
    report = syncer.run_once()
    [registry] = report.registries
    assert registry.changes is not None
    assert (len(registry.changes.update), len(registry.changes.health)) == (0, 1)
    after = _owned(catalog)["w1"]
    assert after.health == CRITICAL and after.meta[DIGEST] == before.meta[DIGEST]
    assert validations == ["scripted/w1"]  # validated once, whatever the health

    steady = syncer.run_once()
    assert steady.registries[0].changes is not None
    assert steady.registries[0].changes.writes == 0
    assert steady.registries[0].applied is None


def test_a_flapping_worker_is_damped_and_its_held_change_is_due() -> None:
    catalog = MemoryCatalog()
    clock = [1000.0]
    source = ScriptedSource(declarations=[{"id": "w1"}])
    syncer = _damped(Syncer([source], [_sync(catalog)], clock=lambda: clock[0]))
    syncer.run_once()
    writes = 0
    for flap in range(10):  # one flap a second for ten seconds
        clock[0] += 1
        source.health["w1"] = CRITICAL if flap % 2 == 0 else PASSING
        report = syncer.run_once()
        assert report.registries[0].changes is not None
        writes += report.registries[0].changes.writes
    assert writes == 0  # passing shown since 1000: every flap within 30 s is held
    assert _owned(catalog)["w1"].health == PASSING
    clock[0] = 1030.0  # still reported passing: nothing was ever due
    source.health["w1"] = CRITICAL
    report = syncer.run_once()
    assert _owned(catalog)["w1"].health == CRITICAL
    source.health["w1"] = PASSING
    clock[0] += 1
    report = syncer.run_once()
    assert report.next_change == 1060  # held until 30 s after it went critical
    assert _owned(catalog)["w1"].health == CRITICAL


def test_a_held_change_is_shown_when_due_while_the_listing_stays_the_same() -> None:
    catalog = MemoryCatalog()
    clock = [1000.0]
    # fingerprinted: the same declarations give the very same list, cycle after cycle
    source = ScriptedSource(declarations=[{"id": "w1"}], as_text=True)
    syncer = _damped(Syncer([source], [_sync(catalog)], clock=lambda: clock[0]))
    syncer.run_once()  # passing, shown since 1000
    clock[0] += 1
    source.health["w1"] = CRITICAL
    assert syncer.run_once().next_change == 1030  # held
    for _ in range(3):  # nothing else changes: the same listing, cycle after cycle
        clock[0] += 1
        syncer.run_once()
        assert _owned(catalog)["w1"].health == PASSING
    clock[0] = 1030.0
    syncer.run_once()
    assert _owned(catalog)["w1"].health == CRITICAL
    clock[0] += 1
    steady = syncer.run_once()  # shown and settled: a steady cycle writes nothing
    assert steady.registries[0].changes is not None
    assert steady.registries[0].changes.writes == 0


def test_the_damping_goes_on_across_a_reload() -> None:
    catalog = MemoryCatalog()
    clock = [0.0]
    source = ScriptedSource(declarations=[{"id": "w1"}], health={"w1": CRITICAL})
    first = _damped(Syncer([source], [_sync(catalog)], clock=lambda: clock[0]))
    first.run_once()
    source.health["w1"] = PASSING
    clock[0] = 5
    reloaded = Syncer(
        [source],
        [_sync(catalog)],
        handover=first.handover,
        clock=lambda: clock[0],
    )
    assert isinstance(reloaded.handover, Handover)
    reloaded.run_once()
    assert _owned(catalog)["w1"].health == CRITICAL


def test_a_dry_run_changes_no_damping_memory() -> None:
    catalog = MemoryCatalog()
    clock = [0.0]
    source = ScriptedSource(declarations=[{"id": "w1"}])
    syncer = _damped(Syncer([source], [_sync(catalog)], clock=lambda: clock[0]))
    syncer.run_once()
    clock[0] = 100
    source.health["w1"] = CRITICAL
    syncer.run_once(dry_run=True)
    source.health["w1"] = PASSING
    clock[0] = 101
    syncer.run_once()  # had the dry run been remembered, critical would be held until 130
    assert _owned(catalog)["w1"].health == PASSING


def test_health_and_withdrawal_are_change_events_with_the_new_state() -> None:
    catalog = MemoryCatalog()
    registry = MemoryRegistry(Ownership(service="worker", owner="me", node="capsync-me"), catalog)
    options = SyncOptions(service="worker", owner="me", unhealthy="withdraw")
    source = ScriptedSource(declarations=[{"id": "w1"}, {"id": "w2"}])
    syncer = Syncer([source], [RegistrySync("memory", registry, options)])
    bus = EventBus()
    publish(bus, syncer.run_once())
    _, subscription = bus.subscribe()
    source.health = {"w1": WARNING, "w2": CRITICAL}
    publish(bus, syncer.run_once())
    events = [(e.action, e.id, e.entry.health.status) for e in subscription.drain()]
    assert events == [("health", "w1", "warning"), ("withdrawn", "w2", "critical")]
    start, _ = bus.subscribe()
    assert start.entries["memory"].keys() == {"w1"}
