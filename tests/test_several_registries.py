"""Several registries kept in step: one discovery, each registry its own plan and apply,
and one that is down holds back none of the others (issue 12's check)."""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.cycle import Deadlines, Syncer
from daemon.query import Query
from daemon.registry.ownership import Ownership
from daemon.registry.sqlite import SqliteRegistry
from daemon.settings_model import SETTINGS
from daemon.wiring import build_registries, build_sources
from discovery.codec import Entry
from tests.conftest import run_cli
from tests.consul_target import ConsulTarget
from tests.daemon_process import Daemon, wait_until
from tests.doubles.consul import ConsulDouble
from tests.test_sync_contract import EXAMPLES

OWNER = "multi"


@pytest.fixture
def double() -> Iterator[ConsulDouble]:
    with ConsulDouble() as started:
        yield started


def restart(double: ConsulDouble) -> None:
    """Bring a stopped double back on its port with what it held, as an agent restarts."""
    double.store.closed = False
    double.start()


@pytest.fixture
def setup(tmp_path: Path, double: ConsulDouble) -> tuple[Path, Path, Path]:
    fleet = tmp_path / "fleet"
    shutil.copytree(EXAMPLES, fleet)
    db = tmp_path / "registry.db"
    config = tmp_path / "capsync.toml"
    config.write_text(
        f'[[registries]]\nbackend = "consul"\nowner = "{OWNER}"\n'
        f'[[registries]]\nname = "local"\nbackend = "sqlite"\npath = "{db}"\nowner = "{OWNER}"\n'
        f'[[sources]]\ntype = "file"\npath = "{fleet}"\n'
    )
    return fleet, db, config


def consul_entries(double: ConsulDouble) -> dict[str, dict]:
    target = ConsulTarget(double.address, double, owner=OWNER)
    return {
        i: {"tags": s["ServiceTags"], "meta": s["ServiceMeta"]}
        for i, s in target.services().items()
    }


def sqlite_entries(db: Path) -> dict[str, dict]:
    registry = SqliteRegistry(db, Ownership(service="worker", owner=OWNER, node=f"capsync-{OWNER}"))
    try:
        listed: list[Entry] = [item.entry for item in registry.entries(Query())]
    finally:
        registry.close()
    return {e.id: {"tags": list(e.tags), "meta": dict(e.meta)} for e in listed}


def test_consul_down_sqlite_still_syncs_then_consul_catches_up(
    double: ConsulDouble, setup: tuple[Path, Path, Path]
) -> None:
    fleet, db, config = setup
    env = {"CONSUL_HTTP_ADDR": double.address}
    first = run_cli("run", "--once", "--config", str(config), env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("consul: sync: 9 created")
    assert "; local: sync: 9 created" in first.stdout
    assert consul_entries(double) == sqlite_entries(db) and len(sqlite_entries(db)) == 9
    before = consul_entries(double)

    double.stop()
    (fleet / "late-worker.json").write_text(json.dumps({"id": "late-worker"}))
    (fleet / "go-worker-1.yaml").unlink()
    down = run_cli("run", "--once", "--config", str(config), env=env)
    assert down.returncode == 1
    assert "consul: registry failed" in down.stdout
    assert "local: sync: 1 created, 0 updated, 1 deleted" in down.stdout
    assert "event=registry_failed" in down.stderr and "registry=consul" in down.stderr
    assert "late-worker" in sqlite_entries(db) and "go-worker-1" not in sqlite_entries(db)

    restart(double)
    assert consul_entries(double) == before  # nothing was written while it was away
    back = run_cli("run", "--once", "--config", str(config), env=env)
    assert back.returncode == 0, back.stderr
    assert back.stdout.startswith("consul: sync: 1 created, 0 updated, 1 deleted")
    assert "local: sync: 0 created, 0 updated, 0 deleted, 9 unchanged" in back.stdout
    assert consul_entries(double) == sqlite_entries(db)


def test_daemon_shows_each_registry(double: ConsulDouble, setup: tuple[Path, Path, Path]) -> None:
    _, _, config = setup
    proc = Daemon(
        ["--config", str(config), "--interval", "300s"], env={"CONSUL_HTTP_ADDR": double.address}
    ).started()
    try:
        wait_until(lambda: proc.status()["last_cycle"])
        status = proc.status()
        assert set(status["last_cycle"]["registries"]) == {"consul", "local"}
        assert status["last_cycle"]["registries"]["local"]["plan"]["summary"]["create"] == 9
        assert proc.get("/readyz").status_code == 200
        metrics = proc.get("/metrics").text
        for line in (
            'capsync_registry_up{registry="consul"} 1.0',
            'capsync_registry_up{registry="local"} 1.0',
            'capsync_registry_operations_total{operation="create",registry="local"} 9.0',
        ):
            assert line in metrics, line
        double.stop()
        proc.signal(signal.SIGHUP)  # a reload syncs at once
        wait_until(lambda: proc.get("/readyz").status_code == 503)
        assert "consul: registry failed" in proc.get("/readyz").text
        assert 'capsync_registry_up{registry="consul"} 0.0' in proc.get("/metrics").text
        assert proc.status()["last_cycle"]["registries"]["local"]["ok"] is True
    finally:
        assert proc.stop() == 0


def test_registry_names_must_be_unique_and_selectable(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[[registries]]\nbackend = "sqlite"\npath = "a.db"\n'
        '[[registries]]\nbackend = "sqlite"\npath = "b.db"\n'
    )
    result = run_cli("config", "check", str(config))
    assert result.returncode == 2
    assert "registry names must be unique (give each a name): ['sqlite']" in result.stderr
    both = tmp_path / "both.toml"
    both.write_text('[registry]\nowner = "x"\n[[registries]]\nbackend = "consul"\n')
    result = run_cli("config", "check", str(both))
    assert result.returncode == 2 and "not both" in result.stderr


def test_find_reads_the_named_registry(tmp_path: Path) -> None:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    fleet = tmp_path / "fleet"
    shutil.copytree(EXAMPLES, fleet)
    assert (
        run_cli(
            "run",
            "--once",
            "--owner",
            OWNER,
            "--source",
            f"file:{fleet}",
            "--registry",
            f"sqlite:{a}",
        ).returncode
        == 0
    )
    config = tmp_path / "c.toml"
    config.write_text(
        f'[[registries]]\nname = "empty"\nbackend = "sqlite"\npath = "{b}"\n'
        f'[[registries]]\nname = "full"\nbackend = "sqlite"\npath = "{a}"\n'
    )
    first = run_cli("list", "--config", str(config), "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == []
    named = run_cli("list", "--config", str(config), "--registry", "full", "--json")
    assert len(json.loads(named.stdout)) == 9
    unknown = run_cli("list", "--config", str(config), "--registry", "nope")
    assert unknown.returncode == 2
    assert "no configured registry of that name (empty, full)" in unknown.stderr


def test_repeated_registry_option_and_its_help(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    shutil.copytree(EXAMPLES, fleet)
    result = run_cli(
        "run",
        "--once",
        "--owner",
        OWNER,
        "--source",
        f"file:{fleet}",
        "--registry",
        f"sqlite:{tmp_path / 'a.db'}",
        "--registry",
        f"sqlite:{tmp_path / 'b.db'}",
    )
    assert result.returncode == 0, result.stderr
    assert "sqlite: sync: 9 created" in result.stdout
    assert "sqlite-2: sync: 9 created" in result.stdout
    bad = run_cli("run", "--once", "--source", f"file:{fleet}", "--registry", "etcd")
    assert bad.returncode == 2
    assert (
        "--registry 'etcd': unknown kind 'etcd'; expected consul, sqlite:PATH, "
        "redis[:URL], postgres[:DSN] or memory"
    ) in bad.stderr
    help_text = run_cli("run", "--help").stdout
    assert "consul|sqlite:PATH|redis[:URL]|postgres[:DSN]|memory" in help_text


def test_a_registry_that_times_out_holds_back_none_of_the_others(
    double: ConsulDouble, setup: tuple[Path, Path, Path]
) -> None:
    fleet, db, _ = setup
    settings = SETTINGS.model_validate(
        {
            "consul": {"address": double.address, "timeout": 0.2},
            "registries": [
                {"backend": "consul", "owner": OWNER},
                {"backend": "sqlite", "name": "local", "path": str(db), "owner": OWNER},
            ],
            "sources": [{"type": "file", "path": str(fleet)}],
        }
    )
    registries = build_registries(settings)
    try:
        double.delay_requests(1.0)  # every Consul answer comes after the client gave up
        report = Syncer(build_sources(settings), registries).run_once()
    finally:
        for target in registries:
            target.registry.close()
        double.clear_faults()
    consul, local = report.registries
    assert "did not answer" in consul.registry_error
    assert local.ok and len(local.changes.create) == 9
    assert len(sqlite_entries(db)) == 9 and consul_entries(double) == {}


def test_a_slow_registry_goes_on_alone_and_is_never_applied_twice_at_once(
    double: ConsulDouble, setup: tuple[Path, Path, Path]
) -> None:
    """Consul answers, but slowly: SQLite's cycles carry on; Consul's sync finishes on its
    own, no second one starts on it meanwhile, and the next cycle after it catches up."""
    fleet, db, _ = setup
    settings = SETTINGS.model_validate(
        {
            "consul": {"address": double.address},
            "registries": [
                {"backend": "consul", "owner": OWNER},
                {"backend": "sqlite", "name": "local", "path": str(db), "owner": OWNER},
            ],
            "sources": [{"type": "file", "path": str(fleet)}],
        }
    )
    registries = build_registries(settings)
    syncer = Syncer(build_sources(settings), registries, deadlines=Deadlines(apply=0.2))
    consul_target = registries[0]
    try:
        double.delay_requests(1.0)  # slow, but within the client's timeout
        consul, local = syncer.run_once().registries
        assert "still applying after 0.2s" in consul.registry_error
        assert local.ok and len(local.changes.create) == 9

        (fleet / "late-worker.json").write_text(json.dumps({"id": "late-worker"}))
        double.reset_counts()
        consul, local = syncer.run_once().registries
        assert "still applying" in consul.registry_error
        assert local.ok and [e.id for e in local.changes.create] == ["late-worker"]
        assert double.count("GET", "/v1/catalog/node-services") == 0  # no second sync began

        double.clear_faults()
        wait_until(lambda: consul_target.running is None)
        assert len(consul_entries(double)) == 9  # the first cycle's, written late
        consul, local = syncer.run_once().registries
        assert consul.ok and [e.id for e in consul.changes.create] == ["late-worker"]
        assert consul_entries(double) == sqlite_entries(db)
    finally:
        double.clear_faults()
        wait_until(lambda: consul_target.running is None)
        for target in registries:
            target.registry.close()
