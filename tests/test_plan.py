"""The diff, table-driven: owned x desired -> create / update / delete / unchanged / held."""

from __future__ import annotations

import pytest

from daemon.plan import Changes, DeletionGuard, Restraints, plan
from discovery.codec import Entry


def entry(worker_id: str, version: str = "1", source: str = "file") -> Entry:
    return Entry(
        worker_id, "worker", (), {"v": version, "capsync-owner": "me", "capsync-source": source}
    )


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
        ({"w1": "1"}, {"W1": "1"}, [], ["W1"], [], 0),
        ({"W1": "1", "x": "1"}, {"w1": "2", "X": "1"}, [], ["w1", "X"], [], 0),
    ],
    ids=[
        "create",
        "unchanged",
        "update",
        "delete",
        "mixed",
        "case-rename",
        "case-rename-and-change",
    ],
)
def test_table(owned, desired, create, update, delete, unchanged) -> None:
    changes = plan(
        {k: entry(k, v) for k, v in owned.items()}, {k: entry(k, v) for k, v in desired.items()}
    )
    assert (ids(changes.create), ids(changes.update), ids(changes.delete)) == (
        create,
        update,
        delete,
    )
    assert changes.unchanged == unchanged


def test_kept_entries_are_neither_updated_nor_deleted() -> None:
    owned = {"a": entry("a"), "b": entry("b")}
    changes = plan(owned, {"a": entry("a", "2")}, restraints=Restraints(keep={"a", "b"}))
    assert changes == Changes(kept=2)


def test_first_sync_gate_holds_deletions_only() -> None:
    changes = plan(
        {"a": entry("a")}, {"b": entry("b")}, restraints=Restraints(deletions_open=False)
    )
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
    ("sources", "emptied", "high_water", "held"),
    [
        ({"a": 60, "b": 40}, "b", {}, 40),  # one source emptied: held per source
        ({"a": 95, "b": 5}, "b", {}, 0),  # 5 lost: within max_delete_count
        ({"a": 51}, "a", {"*": 100, "a": 100}, 51),  # sliced: 100 -> 49 -> 0
        ({"a": 60}, "", {"*": 100, "a": 100}, 0),  # nothing deleted now: nothing held
    ],
    ids=["emptied-source", "small-source", "sliced", "no-deletion"],
)
def test_guard_per_source_against_the_high_water_mark(
    sources: dict[str, int], emptied: str, high_water: dict[str, int], held: int
) -> None:
    owned = {f"{s}{i}": entry(f"{s}{i}", source=s) for s, n in sources.items() for i in range(n)}
    desired = {k: e for k, e in owned.items() if e.source != emptied}
    changes = plan(owned, desired, restraints=Restraints(high_water=high_water))
    assert len(changes.held) == held
    assert len(changes.delete) == len(owned) - len(desired) - held


def test_sliced_deletion_just_under_the_limit_then_held() -> None:
    owned = {f"w{i}": entry(f"w{i}") for i in range(100)}
    first = plan(
        owned,
        dict(list(owned.items())[49:]),
        restraints=Restraints(high_water={"*": 100, "file": 100}),
    )
    assert len(first.delete) == 49 and not first.held
    left = dict(list(owned.items())[49:])
    second = plan(
        left,
        dict(list(left.items())[25:]),
        restraints=Restraints(high_water={"*": 100, "file": 100}),
    )
    assert len(second.held) == 25 and "high-water mark" in second.held_reason


@pytest.mark.parametrize(
    ("policy", "create", "update", "delete"),
    [("sync", 1, 1, 1), ("upsert-only", 1, 1, 0), ("create-only", 1, 0, 0)],
)
def test_policies(policy: str, create: int, update: int, delete: int) -> None:
    owned = {"old": entry("old"), "same": entry("same", "1")}
    desired = {"same": entry("same", "2"), "new": entry("new")}
    changes = plan(owned, desired, policy=policy)
    assert (len(changes.create), len(changes.update), len(changes.delete)) == (
        create,
        update,
        delete,
    )


def test_inputs_are_not_mutated() -> None:
    owned, desired = {"a": entry("a")}, {"b": entry("b")}
    plan(owned, desired)
    assert list(owned) == ["a"] and list(desired) == ["b"]
