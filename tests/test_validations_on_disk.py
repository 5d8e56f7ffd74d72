"""What one `capsync run --once` validated is kept in the state directory for the next:
reused only for the very same content, never trusted when the file is damaged, foreign
or not capsync's own, and never a reason to skip reading the registry."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli
from tests.consul_target import ConsulTarget
from tests.test_sync_contract import write_fleet

COUNT = 12


def run_once(consul: ConsulTarget, tmp_path: Path, **env: str) -> Any:
    return run_cli(
        "run",
        "--once",
        "--owner",
        consul.owner,
        "--service",
        consul.service,
        "--source",
        f"file:{tmp_path / 'fleet'}",
        env=consul.env(STATE_DIRECTORY=str(tmp_path / "state"), **env),
    )


def reuse(stderr: str, line: str = "validations_reused source=file") -> tuple[int, int]:
    """(reused, validated) from the run's one ``line`` (entries: (reused, encoded))."""
    [(reused, validated)] = re.findall(rf"{line} reused=(\d+) \w+=(\d+)", stderr)
    return int(reused), int(validated)


def entries(consul: ConsulTarget) -> dict[str, tuple[Any, ...]]:
    """What a user reads back: each instance's tags and meta."""
    return {
        sid: (sorted(item["ServiceTags"]), item["ServiceMeta"])
        for sid, item in consul.services().items()
    }


def first_run(consul: ConsulTarget, tmp_path: Path) -> dict[str, tuple[Any, ...]]:
    """A first run: every declaration validated, encoded, written, and kept on disk."""
    write_fleet(tmp_path / "fleet", COUNT)
    (tmp_path / "state").mkdir()
    first = run_once(consul, tmp_path)
    assert first.returncode == 0, first.stderr
    # Nothing to reuse, nothing to report.
    assert "validations_" not in first.stderr and "entries_" not in first.stderr
    for kept in ("validations.cache", "entries.cache"):
        assert (tmp_path / "state" / kept).is_file()
    return entries(consul)


@pytest.fixture
def synced(consul: ConsulTarget, tmp_path: Path) -> dict[str, tuple[Any, ...]]:
    return first_run(consul, tmp_path)


def test_a_second_run_with_nothing_changed_reuses_every_validation(
    consul: ConsulTarget, tmp_path: Path, synced: dict[str, tuple[Any, ...]]
) -> None:
    second = run_once(consul, tmp_path)
    assert second.returncode == 0, second.stderr
    assert reuse(second.stderr) == (COUNT, 0)
    assert f"{COUNT} unchanged" in second.stdout
    assert entries(consul) == synced


def test_a_file_changed_behind_the_same_size_and_time_is_validated_and_written(
    consul: ConsulTarget, tmp_path: Path, synced: dict[str, tuple[Any, ...]]
) -> None:
    """The same size, inode and modification time: only the content tells, and it does."""
    path = tmp_path / "fleet" / "w-0003.json"
    before = path.stat()
    text = path.read_text()
    changed = text.replace('"pool": "p3"', '"pool": "p9"')
    assert changed != text and len(changed) == len(text)
    with path.open("r+") as handle:  # in place: the inode stays
        handle.write(changed)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    second = run_once(consul, tmp_path)
    assert second.returncode == 0, second.stderr
    assert reuse(second.stderr) == (COUNT - 1, 1)
    assert "1 updated" in second.stdout
    assert entries(consul)["w-0003"][1]["pool"] == "p9"
    assert {k: v for k, v in entries(consul).items() if k != "w-0003"} == {
        k: v for k, v in synced.items() if k != "w-0003"
    }


def test_an_invalid_change_is_reported_not_hidden_by_the_kept_validation(
    consul: ConsulTarget, tmp_path: Path, synced: dict[str, tuple[Any, ...]]
) -> None:
    path = tmp_path / "fleet" / "w-0004.json"
    declaration = json.loads(path.read_text())
    declaration["flags"] = {"llm_support": "maybe"}
    path.write_text(json.dumps(declaration))
    second = run_once(consul, tmp_path)
    assert reuse(second.stderr) == (COUNT - 1, 1)
    assert "1 invalid" in second.stdout
    assert "w-0004.json field=flags.llm_support" in second.stderr
    assert entries(consul) == synced  # the invalid worker's entry is kept as it was


def damage(kind: str, cache: Path) -> None:
    data = cache.read_bytes()
    if kind == "truncated":
        cache.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        cache.write_bytes(b"")
    elif kind == "garbage":
        cache.write_bytes(b"\x80\x05not a pickle at all" * 10)
    elif kind == "other version":
        # The same format, written by other code: the code digest line differs.
        magic, _, rest = data.split(b"\n", 2)
        cache.write_bytes(magic + b"\n" + b"0" * 32 + b"\n" + rest)
    elif kind == "corrupt body":
        # Still a valid pickle, naming another tool: only the checksum tells.
        assert b"clippy" in data
        cache.write_bytes(data.replace(b"clippy", b"clippx"))
    elif kind == "writable by others":
        cache.chmod(0o666)
    elif kind == "a directory":
        cache.unlink()
        cache.mkdir()
    elif kind == "a FIFO":
        cache.unlink()
        os.mkfifo(cache)


DAMAGES = (
    "truncated",
    "empty",
    "garbage",
    "other version",
    "corrupt body",
    "writable by others",
    "a directory",
    "a FIFO",
)


@pytest.mark.parametrize("kind", DAMAGES)
def test_a_damaged_or_foreign_file_is_ignored_with_one_line(
    consul: ConsulTarget, tmp_path: Path, synced: dict[str, tuple[Any, ...]], kind: str
) -> None:
    ignored_then_rewritten(consul, tmp_path, synced, kind, "validations")


def ignored_then_rewritten(
    consul: ConsulTarget,
    tmp_path: Path,
    synced: dict[str, tuple[Any, ...]],
    kind: str,
    name: str,
    reused: str = "validations_reused source=file",
) -> None:
    """``name``.cache damaged ``kind``: one ``name``_ignored line, the same registry,
    and (when it can be) the file written again, whole, for the run after to reuse."""
    damage(kind, tmp_path / "state" / f"{name}.cache")
    second = run_once(consul, tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stderr.count(f"{name}_ignored") == 1, second.stderr
    assert "Traceback" not in second.stderr
    assert f"{name}_reused" not in second.stderr
    assert f"{COUNT} unchanged" in second.stdout
    assert entries(consul) == synced
    if kind not in ("a directory", "a FIFO"):
        third = run_once(consul, tmp_path)
        assert reuse(third.stderr, reused) == (COUNT, 0), third.stderr


def test_a_registry_changed_by_hand_between_runs_is_repaired(
    consul: ConsulTarget, tmp_path: Path, synced: dict[str, tuple[Any, ...]]
) -> None:
    consul.retag_by_hand("w-0001", ["not-declared"])
    assert (
        consul.put(
            "/v1/catalog/deregister", {"Node": consul.node, "ServiceID": "w-0002"}
        ).status_code
        == 200
    )
    second = run_once(consul, tmp_path)
    assert second.returncode == 0, second.stderr
    assert reuse(second.stderr) == (COUNT, 0)
    assert "1 created, 1 updated" in second.stdout
    assert entries(consul) == synced


def test_off_keeps_nothing_and_a_missing_state_directory_is_no_line(
    consul: ConsulTarget, tmp_path: Path
) -> None:
    write_fleet(tmp_path / "fleet", 3)
    (tmp_path / "state").mkdir()
    config = tmp_path / "capsync.toml"
    config.write_text('[daemon]\nvalidations = "off"\n')
    off = run_once(consul, tmp_path, CAPSYNC_CONFIG=str(config))
    assert off.returncode == 0, off.stderr
    assert "validations_" not in off.stderr
    assert list((tmp_path / "state").iterdir()) == []
    (tmp_path / "state").rmdir()  # a state directory nobody made: the run is not hurt
    missing = run_once(consul, tmp_path)
    assert missing.returncode == 0, missing.stderr
    assert "validations_" not in missing.stderr, missing.stderr
    assert not (tmp_path / "state").exists()


def test_a_state_directory_that_cannot_be_written_is_one_line(
    consul: ConsulTarget, tmp_path: Path
) -> None:
    write_fleet(tmp_path / "fleet", 3)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "validations.cache").mkdir()  # in the way of the rename
    result = run_once(consul, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("validations_not_saved") == 1, result.stderr
