"""What one `capsync run --once` encoded is kept in the state directory for the next
(daemon/kept_entries.py): reused only for the very same declaration, registry and instant
answers, never trusted when the file is damaged, foreign or not capsync's own, and never
a reason to skip reading the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from daemon.cycle import Handover, Syncer
from daemon.settings_model import SETTINGS
from daemon.wiring import build_normaliser, build_registries, build_sources
from tests.consul_target import ConsulTarget
from tests.test_validations_on_disk import (
    COUNT,
    DAMAGES,
    entries,
    first_run,
    ignored_then_rewritten,
    reuse,
    run_once,
)

REUSED = "entries_reused registry=consul"


def reused(stderr: str) -> tuple[int, int]:
    """(reused, encoded) from the run's one entries_reused line."""
    return reuse(stderr, REUSED)


@pytest.fixture
def synced(consul: ConsulTarget, tmp_path: Path) -> dict[str, tuple[Any, ...]]:
    return first_run(consul, tmp_path)


def test_a_second_run_with_nothing_changed_encodes_nothing_and_writes_nothing(
    consul: ConsulTarget, tmp_path: Path, synced: dict[str, tuple[Any, ...]]
) -> None:
    cache = tmp_path / "state" / "entries.cache"
    written = cache.stat().st_mtime_ns
    second = run_once(consul, tmp_path)
    assert second.returncode == 0, second.stderr
    assert reused(second.stderr) == (COUNT, 0)
    assert f"{COUNT} unchanged" in second.stdout
    assert "(0 write requests)" in second.stdout
    assert entries(consul) == synced
    assert cache.stat().st_mtime_ns == written  # nothing new: the file is not rewritten


def test_a_changed_declaration_is_encoded_and_written(
    consul: ConsulTarget, tmp_path: Path, synced: dict[str, tuple[Any, ...]]
) -> None:
    path = tmp_path / "fleet" / "w-0005.json"
    declaration = json.loads(path.read_text())
    declaration["metadata"]["pool"] = "moved"
    path.write_text(json.dumps(declaration))
    second = run_once(consul, tmp_path)
    assert reused(second.stderr) == (COUNT - 1, 1)
    assert "1 updated" in second.stdout
    assert entries(consul)["w-0005"][1]["pool"] == "moved"
    # The run after reuses the new entry: the file was written again.
    assert reused(run_once(consul, tmp_path).stderr) == (COUNT, 0)


def test_another_owner_or_service_encodes_its_own(
    consul: ConsulTarget, tmp_path: Path, synced: dict[str, tuple[Any, ...]]
) -> None:
    """An entry carries its service and owner: another's kept entries are never its own."""
    other = ConsulTarget(consul.address, consul.double, service="builder")
    result = run_once(other, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "entries_reused" not in result.stderr
    assert f"{COUNT} created" in result.stdout
    assert {item["ServiceMeta"]["capsync-owner"] for item in other.services().values()} == {
        other.owner
    }
    assert entries(consul) == synced


@pytest.mark.parametrize("kind", DAMAGES)
def test_a_damaged_or_foreign_file_is_ignored_with_one_line(
    consul: ConsulTarget, tmp_path: Path, synced: dict[str, tuple[Any, ...]], kind: str
) -> None:
    ignored_then_rewritten(consul, tmp_path, synced, kind, "entries", REUSED)


def test_a_registry_changed_by_hand_between_runs_is_repaired(
    consul: ConsulTarget, tmp_path: Path, synced: dict[str, tuple[Any, ...]]
) -> None:
    """The file holds what capsync wants, never what the registry holds."""
    consul.retag_by_hand("w-0001", ["not-declared"])
    second = run_once(consul, tmp_path)
    assert reused(second.stderr) == (COUNT, 0)
    assert "1 updated" in second.stdout
    assert entries(consul) == synced


def test_a_tool_that_expired_while_capsync_was_stopped_is_encoded_again(
    consul: ConsulTarget, tmp_path: Path
) -> None:
    """Which tools are live is part of the entry: an entry kept from before the expiry is
    not the answer after it."""
    expires = 2_000_000_000
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    tool = {"tool_name": "semgrep", "expiration": {"expires_at": expires}}
    declaration = {"id": "w-exp", "security_scanning_tools": [tool], "flags": {}}
    (fleet / "w-exp.json").write_text(json.dumps(declaration))
    (tmp_path / "state").mkdir()

    def process(now: float) -> str:
        """A new process's one cycle at ``now``, as `run --once`, then stopped."""
        settings = SETTINGS.model_validate(
            {
                "registry": {"owner": consul.owner},
                "consul": {"address": consul.address},
                "sources": [{"type": "file", "path": str(fleet)}],
                "daemon": {"validations": str(tmp_path / "state" / "validations.cache")},
            }
        )
        normaliser = build_normaliser(settings)
        syncer = Syncer(
            build_sources(settings, normaliser.validations),
            build_registries(settings),
            handover=Handover(normaliser=normaliser),
            clock=lambda: now,
        )
        report = syncer.run_once()
        syncer.close()
        assert report.ok
        return json.dumps(entries(consul)["w-exp"])

    before = process(expires - 100)
    assert "semgrep" in before
    assert process(expires - 50) == before  # the same instant answers: reused
    after = process(expires + 100)
    assert "semgrep" not in json.loads(after)[0], after
    # A clock set back (to before the expiry): what was worked out later is no answer.
    assert process(expires - 100) == before
