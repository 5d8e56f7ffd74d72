"""A deletion guard that cannot be sliced or diluted (issue 10, point 5)."""

from __future__ import annotations

import json
from pathlib import Path

from daemon.cycle import Handover, Syncer
from daemon.registry.memory import MemoryCatalog, MemoryRegistry
from daemon.registry.ownership import Ownership
from daemon.registry_sync import RegistrySync, SyncOptions
from tests.backends import Backend
from tests.consul_target import ConsulTarget
from tests.daemon_process import Daemon, wait_until
from tests.scripted_source import ScriptedSource
from tests.test_sync_contract import sync


def write_part(path: Path, prefix: str, count: int) -> None:
    """One file holding ``count`` declarations: removing it is one atomic change."""
    path.write_text(json.dumps([{"id": f"{prefix}-{i:03}"} for i in range(count)]))


def test_an_emptied_source_is_held_however_many_others_there_are(backend: Backend, tmp_path: Path):
    big, small = tmp_path / "big", tmp_path / "small"
    big.mkdir()
    small.mkdir()
    write_part(big / "all.json", "big", 60)
    write_part(small / "all.json", "small", 40)
    args = ("--source", f"file:{big}", "--source", f"file:{small}")
    assert "100 created" in sync(backend, *args).stdout
    before = backend.services()

    (small / "all.json").unlink()  # 40 of 100 owned: under half, but all of one source
    result = sync(backend, *args)

    assert "0 deleted" in result.stdout and "40 held" in result.stdout, result.stdout
    assert "source 'file-2'" in result.stderr and "event=deletions_held" in result.stderr
    assert backend.services() == before

    released = sync(backend, *args, "--allow-mass-delete")
    assert "40 deleted" in released.stdout
    assert sorted(backend.services()) == sorted(i for i in before if i.startswith("big"))


def test_deletions_sliced_across_cycles_are_held_until_released(
    consul: ConsulTarget, tmp_path: Path
):
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    for name, count in (("a", 45), ("b", 40), ("c", 15)):
        write_part(fleet / f"{name}.json", name, count)
    release = tmp_path / "release-deletions"
    proc = Daemon(
        ["--owner", consul.owner, "--source", f"file:{fleet}", "--interval", "1s"],
        env=consul.env(CAPSYNC_REGISTRY__RELEASE_FILE=str(release)),
    ).started()
    try:
        wait_until(lambda: len(consul.services()) == 100, 20)
        (fleet / "a.json").unlink()  # 45 of 100: under the limit, deleted
        wait_until(lambda: len(consul.services()) == 55, 20)

        (fleet / "b.json").unlink()  # 40 of the 55 left, 85 of the high-water mark 100
        held = wait_until(lambda: proc.status()["last_cycle"]["plan"]["summary"]["held"], 20)
        assert held == 40
        status = proc.status()["last_cycle"]
        assert "high-water mark" in status["plan"]["held_reason"]
        assert "release_file" in status["plan"]["release"]
        assert 'capsync_deletions_held{registry="consul"} 40.0' in proc.get("/metrics").text
        proc.wait_for(lambda line: "event=cycle" in line and "40 held" in line, 10)
        assert len(consul.services()) == 55

        release.touch()  # the operator's release: one cycle
        wait_until(lambda: len(consul.services()) == 15, 20)
        assert not release.exists()
        (fleet / "c.json").write_text("[]")  # the new baseline: 15, emptied -> held again
        wait_until(lambda: proc.status()["last_cycle"]["plan"]["summary"]["held"] == 15, 20)
        assert len(consul.services()) == 15
    finally:
        assert proc.stop() == 0


def _fleet(count: int) -> list[dict[str, object]]:
    return [{"id": f"w-{i:03}"} for i in range(count)]


def _memory_sync(catalog: MemoryCatalog, name: str, release: Path | None = None) -> RegistrySync:
    registry = MemoryRegistry(
        Ownership(service="worker", owner="host-1", node="capsync-host-1"),
        catalog,
    )
    return RegistrySync(
        name, registry, SyncOptions(service="worker", owner="host-1", release_file=release)
    )


def test_the_guard_memory_survives_a_reload() -> None:
    """A reload builds a new Syncer: the high-water marks are handed on, as listed_once."""
    catalog = MemoryCatalog()
    source = ScriptedSource(declarations=_fleet(100))
    first = Syncer([source], [_memory_sync(catalog, "r")])
    assert first.run_once().ok
    source.declarations = source.declarations[45:]
    assert len(first.run_once().registries[0].changes.delete) == 45

    reloaded = Syncer(
        [source],
        [_memory_sync(catalog, "r")],
        handover=first.handover,
    )
    source.declarations = source.declarations[25:]  # 25 of 55, but 70 of the mark 100
    report = reloaded.run_once().registries[0]
    assert len(report.changes.held) == 25 and not report.changes.delete
    # Without the process's memory (a restart), the marks recorded in the registry
    # still hold the same slice (issue 22).
    fresh = Syncer(
        [source], [_memory_sync(catalog, "r")], handover=Handover(first.handover.listed_once)
    )
    restarted = fresh.run_once(dry_run=True).registries[0].changes
    assert len(restarted.held) == 25 and not restarted.delete


def test_one_release_file_releases_every_registry_it_names(tmp_path: Path) -> None:
    release = tmp_path / "release-deletions"
    source = ScriptedSource(declarations=_fleet(10))
    targets = [_memory_sync(MemoryCatalog(), name, release) for name in ("a", "b")]
    sync = Syncer([source], targets)
    assert sync.run_once().ok
    source.declarations = []
    assert all(len(r.changes.held) == 10 for r in sync.run_once().registries)
    release.touch()
    assert all(len(r.changes.delete) == 10 for r in sync.run_once().registries)
    assert not release.exists()
