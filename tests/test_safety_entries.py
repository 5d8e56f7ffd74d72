"""No entry lost or taken over (issue 10, points 2-4), through the CLI, on every registry.

After each step the registry is compared with what it must hold: no owned entry lost,
no foreign entry changed.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.backends import Backend
from tests.test_sync_contract import sync


def declarations(*ids: str) -> list[dict[str, object]]:
    return [{"id": i, "static_analysis_tools": [{"tool_name": "clippy"}]} for i in ids]


# -- 2. A file that fails to parse keeps every entry it produced ----------------------

BROKEN = {
    "array.json": (json.dumps, lambda text: text[: len(text) // 2]),
    "stream.yaml": (
        lambda items: "\n---\n".join(json.dumps(item) for item in items),
        lambda text: text + "\n---\n{id: [unclosed\n",
    ),
}


def test_broken_multi_declaration_files_keep_all_their_entries(backend: Backend, tmp_path: Path):
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    for index, (name, (write, _)) in enumerate(BROKEN.items()):
        (fleet / name).write_text(write(declarations(*(f"m{index}-{i}" for i in range(4)))))
    (fleet / "single.json").write_text('{"id": "single"}')
    assert "9 created" in sync(backend, "--source", f"file:{fleet}").stdout
    before = backend.services()
    assert before["m0-2"].meta["capsync-ref"] == f"{fleet / 'array.json'}[2]"

    for name, (_, damage) in BROKEN.items():  # half-saved: every item's ref is path[i]
        (fleet / name).write_text(damage((fleet / name).read_text()))
    result = sync(backend, "--source", f"file:{fleet}")

    assert "0 deleted" in result.stdout and "8 kept" in result.stdout, result.stdout
    assert "2 invalid" in result.stdout
    assert backend.services() == before


# -- 3. Worker ids compare case-insensitively ----------------------------------------


def test_case_only_rename_is_one_update(backend: Backend, tmp_path: Path):
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "w.json").write_text('{"id": "worker-1"}')
    (fleet / "other.json").write_text('{"id": "other"}')
    assert "2 created" in sync(backend, "--source", f"file:{fleet}").stdout

    (fleet / "w.json").write_text('{"id": "Worker-1"}')
    result = sync(backend, "--source", f"file:{fleet}")

    assert "0 created, 1 updated, 0 deleted" in result.stdout, result.stdout
    assert sorted(backend.services()) == ["Worker-1", "other"]
    again = sync(backend, "--source", f"file:{fleet}")
    assert "2 unchanged" in again.stdout and "(0 write requests)" in again.stdout


def test_foreign_entry_differing_in_case_is_never_overwritten(backend: Backend, tmp_path: Path):
    squatter = backend.with_service("builder")  # another unit, same node
    other_dir = tmp_path / "theirs"
    other_dir.mkdir()
    (other_dir / "t.json").write_text('{"id": "Shared-1"}')
    assert sync(squatter, "--source", f"file:{other_dir}").returncode == 0
    theirs = squatter.services()

    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "s.json").write_text('{"id": "shared-1", "flags": {"mine": true}}')
    result = sync(backend, "--source", f"file:{fleet}")

    assert "event=conflict id=shared-1" in result.stderr
    assert "0 created" in result.stdout
    assert squatter.services() == theirs and backend.services() == {}
    assert list(theirs) == ["Shared-1"] and "flag-mine" not in theirs["Shared-1"].meta


# -- 4. Ownership is owner and service; one writer per owner and service -------------


def test_second_host_with_the_same_owner_refuses_to_write(backend: Backend, tmp_path: Path):
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "a.json").write_text('{"id": "a"}')
    env_a = {"CAPSYNC_REGISTRY__WRITER": "host-a"}
    assert sync(backend, "--source", f"file:{fleet}", env=env_a).returncode == 0
    again = sync(backend, "--source", f"file:{fleet}", env=env_a)  # a restart: same writer
    assert again.returncode == 0 and "1 unchanged" in again.stdout
    before = backend.services()

    other = tmp_path / "other"
    other.mkdir()
    (other / "b.json").write_text('{"id": "b"}')
    result = sync(
        backend,
        "--source",
        f"file:{other}",
        "--allow-mass-delete",
        env={"CAPSYNC_REGISTRY__WRITER": "host-b"},
    )

    assert result.returncode == 1
    assert "'host-a'" in result.stderr and "'host-b'" in result.stderr
    assert "leader_election" in result.stderr and "Traceback" not in result.stderr
    assert backend.services() == before

    # With leader election writers are serialised: the leader takes the node over.
    leader = sync(
        backend,
        "--source",
        f"file:{other}",
        "--allow-mass-delete",
        env={"CAPSYNC_REGISTRY__WRITER": "host-b", "CAPSYNC_DAEMON__LEADER_ELECTION": "true"},
    )
    assert leader.returncode == 0, leader.stderr
    assert list(backend.services()) == ["b"]
