"""The diff, table-driven: owned x desired -> create / update / delete / unchanged / held."""

from __future__ import annotations

import pytest

from daemon.plan import Changes, DeletionGuard, plan
from discovery.codec import Entry


def entry(worker_id: str, version: str = "1") -> Entry:
    return Entry(worker_id, "worker", (), {"v": version, "capsync-owner": "me"})


def ids(entries) -> list[str]:
    return [e.id if isinstance(e, Entry) else e.new.id for e in entries]


@pytest.mark.parametrize(
    ("owned", "desired", "create", "update", "delete", "unchanged"),
    [
        ({}, {"a": "1"}, ["a"], [], [], 0),
        ({"a": "1"}, {"a": "1"}, [], [], [], 1),
        ({"a": "1"}, {"a": "2"}, [], ["a"], [], 0),
        ({"a": "1"}, {}, [], [], ["a"], 0),
        ({"a": "1", "b": "1"}, {"b": "2", "c": "1"}, ["c"], ["b"], ["a"], 0),
    ],
    ids=["create", "unchanged", "update", "delete", "mixed"],
)
def test_table(owned, desired, create, update, delete, unchanged) -> None:
    changes = plan({k: entry(k, v) for k, v in owned.items()},
                   {k: entry(k, v) for k, v in desired.items()})
    assert (ids(changes.create), ids(changes.update), ids(changes.delete)) == (
        create, update, delete)
    assert changes.unchanged == unchanged


def test_kept_entries_are_neither_updated_nor_deleted() -> None:
    owned = {"a": entry("a"), "b": entry("b")}
    changes = plan(owned, {"a": entry("a", "2")}, keep={"a", "b"})
    assert changes == Changes(kept=2)


def test_first_sync_gate_holds_deletions_only() -> None:
    changes = plan({"a": entry("a")}, {"b": entry("b")}, deletions_open=False)
    assert ids(changes.create) == ["b"] and not changes.delete
    assert ids(changes.held) == ["a"] and "first sync" in changes.held_reason


@pytest.mark.parametrize(
    ("owned", "deleting", "held"),
    [(10, 5, False), (10, 6, True), (4, 4, False), (20, 10, False), (20, 11, True)],
)
def test_mass_deletion_guard(owned: int, deleting: int, held: bool) -> None:
    current = {f"w{i}": entry(f"w{i}") for i in range(owned)}
    desired = dict(list(current.items())[deleting:])
    changes = plan(current, desired)
    assert bool(changes.held) is held and len(changes.delete) == (0 if held else deleting)
    allowed = plan(current, desired, guard=DeletionGuard(allow=True))
    assert len(allowed.delete) == deleting


@pytest.mark.parametrize(
    ("policy", "create", "update", "delete"),
    [("sync", 1, 1, 1), ("upsert-only", 1, 1, 0), ("create-only", 1, 0, 0)],
)
def test_policies(policy: str, create: int, update: int, delete: int) -> None:
    owned = {"old": entry("old"), "same": entry("same", "1")}
    desired = {"same": entry("same", "2"), "new": entry("new")}
    changes = plan(owned, desired, policy=policy)
    assert (len(changes.create), len(changes.update), len(changes.delete)) == (
        create, update, delete)


def test_inputs_are_not_mutated() -> None:
    owned, desired = {"a": entry("a")}, {"b": entry("b")}
    plan(owned, desired)
    assert list(owned) == ["a"] and list(desired) == ["b"]
