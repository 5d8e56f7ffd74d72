"""Health in every registry kind (the contract's places): kept beside each entry in the
registry's own bookkeeping (Consul: its check; SQLite and PostgreSQL: a column; Redis: a
field of capsync's entry hash), read back by a fresh registry, and a health-only change
writes the health alone, never the seed's layout."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from config import loading
from daemon.cycle import Syncer
from daemon.query import Query, select, worker_json
from daemon.registry_sync import RegistrySync, SyncOptions
from daemon.settings_model import SETTINGS
from daemon.wiring import sync_options
from discovery.health import Health
from tests.conftest import run_cli
from tests.scripted_source import ScriptedSource
from tests.test_registry_contract import (  # noqa: F401 - the places are fixtures
    OWNER,
    Place,
    consul_place,
    declared,
    memory_place,
    place,
    postgres_place,
    redis_place,
    sqlite_place,
    syncer,
)

CRITICAL = Health("critical", "docker: unhealthy (3 failed probes)")
WARNING = Health("warning", "websocket: connection closed")


def test_health_is_kept_beside_each_entry_and_a_change_writes_only_it(
    place: Place,  # noqa: F811 - the contract's fixture
) -> None:
    source = ScriptedSource(declarations=declared("h-1", "h-2"), as_text=True)
    sync = syncer(place, source)
    assert sync.run_once().registries[0].ok
    seed_layout = place.raw("h-1")
    source.health["h-1"] = CRITICAL
    report = sync.run_once().registries[0]
    assert report.ok and report.keeps_health
    assert (len(report.changes.update), len(report.changes.health)) == (0, 1)
    assert report.applied is not None and report.applied.written == {"health": 1}
    owned = place.open(writer="host-a").snapshot().owned  # a fresh registry reads it back
    assert (owned["h-1"].health, owned["h-2"].health.status) == (CRITICAL, "passing")
    if isinstance(seed_layout, bytes):  # Redis: the seed's key holds the declaration alone
        assert place.raw("h-1") == seed_layout

    steady = sync.run_once().registries[0]
    assert steady.changes.writes == 0 and steady.applied is None

    source.health["h-1"] = WARNING
    source.declarations = declared("h-1", "h-2", tools=("semgrep",))
    both = sync.run_once().registries[0]  # declaration and health change: one update each
    assert (len(both.changes.update), len(both.changes.health)) == (2, 0) and both.ok
    owned = place.open(writer="host-a").snapshot().owned
    assert (owned["h-1"].health, owned["h-2"].health.status) == (WARNING, "passing")

    source.health.clear()
    back = sync.run_once().registries[0]
    assert len(back.changes.health) == 1 and back.ok
    assert place.open(writer="host-a").snapshot().owned["h-1"].health.status == "passing"


def test_healthy_queries_keep_passing_workers_only(place: Place) -> None:  # noqa: F811
    source = ScriptedSource(declarations=declared("q-1", "q-2", "q-3"), as_text=True)
    source.health.update({"q-1": CRITICAL, "q-3": WARNING})
    sync = syncer(place, source)
    assert sync.run_once().registries[0].ok
    registry = place.open(writer="host-a")
    every = {found[1].id: found[1].health.status for found in select(registry, Query())}
    assert every == {"q-1": "critical", "q-2": "passing", "q-3": "warning"}
    healthy = select(registry, Query(tools=("clippy",), category="static_analysis", healthy=True))
    assert [found[1].id for found in healthy] == ["q-2"]
    assert worker_json(*healthy[0])["health"]["status"] == "passing"


def _withdrawing(place: Place, source: ScriptedSource) -> Syncer:  # noqa: F811 - a Place
    options = SyncOptions(service="worker", owner=OWNER, unhealthy="withdraw")
    target = RegistrySync("r", place.open(writer="host-a"), options)
    return Syncer([source], [target])


def test_withdraw_takes_critical_workers_out_and_puts_them_back(
    place: Place,  # noqa: F811
) -> None:
    source = ScriptedSource(declarations=declared("w-1", "w-2", "w-3"), as_text=True)
    sync = _withdrawing(place, source)
    assert sync.run_once().registries[0].ok
    source.health["w-2"] = CRITICAL
    source.health["w-3"] = WARNING  # warning stays in, marked
    report = sync.run_once().registries[0]
    assert report.ok and [u.old.id for u in report.changes.withdraw] == ["w-2"]
    assert not report.changes.delete and not report.changes.held
    assert report.applied is not None and report.applied.written == {"withdraw": 1, "health": 1}
    listed = {found[1].id for found in select(place.open(writer="host-a"), Query())}
    assert listed == {"w-1", "w-3"}
    assert place.raw("w-2") in (None, [], [None])  # its key, row or instance is gone

    steady = sync.run_once().registries[0]
    assert steady.changes.writes == 0 and steady.changes.withdrawn == 1

    source.health.clear()
    back = sync.run_once().registries[0]
    assert [e.id for e in back.changes.create] == ["w-2"] and back.ok
    listed = {found[1].id for found in select(place.open(writer="host-a"), Query())}
    assert listed == {"w-1", "w-2", "w-3"}


def test_a_mass_withdrawal_is_reported_not_held(
    place: Place,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    ids = [f"m-{i}" for i in range(10)]
    source = ScriptedSource(declarations=declared(*ids), as_text=True)
    sync = _withdrawing(place, source)
    sync.run_once()
    source.health = dict.fromkeys(ids, CRITICAL)
    with caplog.at_level(logging.WARNING):
        report = sync.run_once().registries[0]
    assert len(report.changes.withdraw) == 10 and not report.changes.held and report.ok
    assert any(r.getMessage() == "mass_withdrawal" for r in caplog.records)
    assert select(place.open(writer="host-a"), Query()) == []
    source.health.clear()
    assert len(sync.run_once().registries[0].changes.create) == 10


def test_the_choice_is_set_per_registry_and_checked(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        '[[registries]]\nbackend = "sqlite"\npath = "a.db"\nunhealthy = "withdraw"\n'
        '[[registries]]\nname = "b"\nbackend = "sqlite"\npath = "b.db"\n'
    )
    settings = loading.load(SETTINGS, environ={"CAPSYNC_CONFIG": str(good)})
    assert [sync_options(r).unhealthy for r in settings.registries] == ["withdraw", "mark"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[[registries]]\nbackend = "sqlite"\npath = "a.db"\nunhealthy = "hide"\n')
    result = run_cli("config", "check", str(bad))
    assert result.returncode == 2 and "unhealthy" in result.stderr
