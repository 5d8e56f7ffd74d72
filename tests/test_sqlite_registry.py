"""The SQLite registry against real files: the Consul registry's semantics, one file."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from config.errors import RegistryError
from daemon.plan import Changes, Update, plan
from daemon.query import Query
from daemon.registry.base import ApplyResult, Listed
from daemon.registry.ownership import Ownership
from daemon.registry.sqlite import SCHEMA_VERSION, SqliteRegistry
from discovery import codec, schema
from tests.conftest import ROOT

Open = Callable[..., SqliteRegistry]


def entry(
    worker_id: str, *tools: str, owner: str = "host-1", service: str = "worker", **extra: Any
) -> codec.Entry:
    data = {"id": worker_id, "static_analysis_tools": [{"tool_name": t} for t in tools], **extra}
    caps = schema.validate(data, ref="t")
    return codec.encode(
        caps, codec.Provenance(service=service, owner=owner, source="file", ref=f"/{worker_id}")
    )


def by_id(*entries: codec.Entry) -> dict[str, codec.Entry]:
    return {e.id: e for e in entries}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "registry.db"


@pytest.fixture
def open_registry(db_path: Path) -> Iterator[Open]:
    """Open registries on the shared file; every one is closed at the end of the test."""
    opened: list[SqliteRegistry] = []

    def make(
        owner: str = "host-1", node: str = "capsync-host-1", service: str = "worker", **kw: Any
    ) -> SqliteRegistry:
        registry = SqliteRegistry(db_path, Ownership(service=service, owner=owner, node=node), **kw)
        opened.append(registry)
        return registry

    yield make
    for registry in opened:
        registry.close()


def raw(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read or write the file behind the registry's back, as another Consul client would."""
    with closing(sqlite3.connect(path)) as db, db:
        return db.execute(sql, params).fetchall()


def register_raw(path: Path, node: str, e: codec.Entry) -> None:
    raw(
        path,
        "INSERT INTO services (node, id, service, tags, meta, address, port)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (node, e.id, e.service, json.dumps(e.tags), json.dumps(dict(e.meta)), "", 0),
    )


def test_cold_create_round_trips_entries_exactly(open_registry: Open, db_path: Path) -> None:
    desired = by_id(
        entry(
            "rust-1",
            "clippy",
            "rustfmt",
            flags={"ast_support": True},
            metadata={"version": "1.0.0", "note": 'ünïcode, "quoted"'},
        ),
        entry(
            "py-1",
            "ruff",
            security_scanning_tools=[
                {"tool_name": "bandit", "required": True, "alternatives": ["semgrep"]}
            ],
        ),
        codec.encode(
            schema.validate({"id": "bare"}, ref="t"),
            codec.Provenance(
                service="worker",
                owner="host-1",
                source="docker",
                ref="c1",
                address="10.0.0.5",
                port=8080,
            ),
        ),
    )
    registry = open_registry()
    changes = plan(registry.snapshot().owned, desired)
    assert [e.id for e in changes.create] == ["bare", "py-1", "rust-1"]

    assert registry.apply(changes) == ApplyResult(requests=1, written={"create": 3})

    snapshot = registry.snapshot()
    assert snapshot.owned == desired and snapshot.foreign == frozenset()
    assert [s.entry.tags for s in registry.entries() if s.entry.id == "py-1"] == [
        ("bandit", "ruff", "semgrep")
    ]
    assert raw(db_path, "PRAGMA journal_mode") == [("wal",)]
    assert raw(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    [(meta,)] = raw(db_path, "SELECT meta FROM nodes WHERE name = 'capsync-host-1'")
    assert json.loads(meta) == {
        "external-node": "true",
        "external-source": "capsync",
        "capsync-owner": "host-1",
        "capsync-writer-worker": "host-1",
    }


def test_steady_state_plans_nothing_and_opens_no_transaction(
    open_registry: Open, db_path: Path
) -> None:
    registry = open_registry()
    assert registry.apply(Changes()) == ApplyResult()
    assert raw(db_path, "SELECT count(*) FROM nodes") == [(0,)]  # no node before a write

    desired = by_id(entry("a", "clippy"), entry("b", "ruff"))
    registry.apply(plan(registry.snapshot().owned, desired))
    again = plan(registry.snapshot().owned, desired)
    assert again == Changes(unchanged=2)
    assert registry.apply(again) == ApplyResult()


def test_update_rewrites_entry_and_tags(open_registry: Open) -> None:
    registry = open_registry()
    registry.apply(plan({}, by_id(entry("a", "clippy"))))
    changed = entry("a", "semgrep", metadata={"zone": "eu"})

    changes = plan(registry.snapshot().owned, by_id(changed))
    assert changes.update == (Update(entry("a", "clippy"), changed),)
    assert registry.apply(changes) == ApplyResult(requests=1, written={"update": 1})

    assert registry.snapshot().owned == {"a": changed}
    assert registry.entries(Query(has=("clippy",))) == []
    assert registry.entries(Query(has=("semgrep",))) == [Listed("capsync-host-1", changed)]


def test_delete_removes_entry_and_absent_delete_is_done(open_registry: Open) -> None:
    registry = open_registry()
    registry.apply(plan({}, by_id(entry("a", "clippy"), entry("b", "ruff"))))

    changes = plan(registry.snapshot().owned, by_id(entry("b", "ruff")))
    assert changes.delete == (entry("a", "clippy"),)
    assert registry.apply(changes) == ApplyResult(requests=1, written={"delete": 1})
    assert set(registry.snapshot().owned) == {"b"}
    assert registry.entries(Query(has=("clippy",))) == []

    # Deregistering something already gone answers true in Consul: done, not refused.
    assert registry.apply(changes) == ApplyResult(requests=1, written={"delete": 1})


def test_batches_are_transactions(open_registry: Open) -> None:
    registry = open_registry(batch_size=3)
    desired = by_id(*(entry(f"w{i}", "clippy") for i in range(7)))

    assert registry.apply(plan({}, desired)) == ApplyResult(requests=3, written={"create": 7})
    assert registry.snapshot().owned == desired


def test_another_services_entries_are_foreign_and_never_taken_over(
    open_registry: Open,
) -> None:
    """Ownership is owner and service: two units on one host, one service each."""
    builder = open_registry(service="builder")
    theirs = entry("a", "clippy", service="builder")
    builder.apply(plan({}, by_id(theirs)))

    registry = open_registry()
    snapshot = registry.snapshot()
    assert snapshot.owned == {} and snapshot.foreign == {"a"}
    result = registry.apply(Changes(create=(entry("A", "ruff"),), delete=(theirs,)))
    # Another writer's entry is a conflict, left alone: the apply is complete all the same.
    assert result.applied == 0 and len(result.conflicts) == 2 and result.complete
    assert builder.snapshot().owned == {"a": theirs}


def test_foreign_rows_on_our_node_are_reported_and_never_touched(
    open_registry: Open, db_path: Path
) -> None:
    registry = open_registry()
    registry.apply(plan({}, by_id(entry("ours", "clippy"))))
    intruder = entry("intruder", "ruff", owner="someone-else")
    register_raw(db_path, "capsync-host-1", intruder)
    manual = codec.Entry(id="manual", service="web", tags=("v1",))
    register_raw(db_path, "capsync-host-1", manual)
    before = raw(db_path, "SELECT * FROM services ORDER BY id")

    snapshot = registry.snapshot()
    assert set(snapshot.owned) == {"ours"}
    assert snapshot.foreign == {"intruder", "manual"}

    mine = entry("intruder", "clippy")
    result = registry.apply(
        Changes(create=(mine,), update=(Update(manual, entry("manual", "x")),), delete=(intruder,))
    )
    assert (result.requests, result.applied) == (1, 0)
    assert [r.id for r in result.conflicts] == ["intruder", "manual", "intruder"]
    assert "someone-else" in result.conflicts[0].reason
    assert raw(db_path, "SELECT * FROM services ORDER BY id") == before


def test_entry_carrying_another_owner_is_refused(open_registry: Open) -> None:
    result = open_registry().apply(Changes(create=(entry("a", "x", owner="host-9"),)))
    assert result.applied == 0
    assert [r.id for r in result.refused] == ["a"]
    assert "host-9" in result.refused[0].reason


def test_node_owned_by_another_is_never_written(open_registry: Open, db_path: Path) -> None:
    first = open_registry(owner="host-1", node="shared")
    first.apply(plan({}, by_id(entry("a", "clippy"))))
    second = open_registry(owner="host-2", node="shared")

    with pytest.raises(RegistryError, match=r"'host-1'.*'host-2'"):
        second.apply(plan({}, by_id(entry("b", "ruff", owner="host-2"))))
    assert raw(db_path, "SELECT id FROM services") == [("a",)]

    raw(db_path, "INSERT INTO nodes VALUES ('agent-node', '10.0.0.1', '{}')")
    with pytest.raises(RegistryError, match="agent-node"):
        open_registry(node="agent-node").apply(plan({}, by_id(entry("c", "x"))))


def test_entries_across_nodes_and_owners_narrowed_by_tags(
    open_registry: Open, db_path: Path
) -> None:
    one = open_registry(owner="host-1", node="capsync-host-1")
    two = open_registry(owner="host-2", node="capsync-host-2")
    w1, w3 = entry("w1", "clippy"), entry("w3", "semgrep", "clippy")
    w2 = entry("w2", "clippy", "rustfmt", owner="host-2")
    one.apply(plan({}, by_id(w3, w1, entry("other-service", "clippy", service="builder"))))
    two.apply(plan({}, by_id(w2)))
    not_capsync = codec.Entry(id="w0", service="worker", tags=("clippy",))
    register_raw(db_path, "capsync-host-2", not_capsync)

    def found(query: Query | None) -> list[tuple[str, str]]:
        return [(listed.node, listed.entry.id) for listed in two.entries(query)]

    assert one.entries() == [
        Listed("capsync-host-1", w1),
        Listed("capsync-host-1", w3),
        Listed("capsync-host-2", w2),
    ]
    assert found(Query(has=("clippy", "rustfmt"))) == [("capsync-host-2", "w2")]
    assert found(Query(tools=("semgrep", "rustfmt"))) == [
        ("capsync-host-1", "w3"),
        ("capsync-host-2", "w2"),
    ]
    assert found(Query(tools=("semgrep", "rustfmt"), has=("clippy",))) == [
        ("capsync-host-1", "w3"),
        ("capsync-host-2", "w2"),
    ]
    assert found(Query(tools=("absent",))) == []
    assert found(Query(flags=("f",))) == found(None)  # not indexed: a superset is fine


CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from daemon.plan import plan
    from daemon.registry.ownership import Ownership
    from daemon.registry.sqlite import SqliteRegistry
    from discovery import codec, schema

    caps = schema.validate({"id": "child-worker"}, ref="t")
    e = codec.encode(caps, codec.Provenance("worker", "child", "file", "c"))
    registry = SqliteRegistry(Path(sys.argv[1]), Ownership("worker", "child", "n-child"))
    try:
        registry.apply(plan({}, {e.id: e}))
        print(json.dumps([[x.node, x.entry.id] for x in registry.entries()]))
    finally:
        registry.close()
    """
)


def test_two_registries_and_a_subprocess_share_the_file(open_registry: Open, db_path: Path) -> None:
    parent = open_registry()
    parent.apply(plan({}, by_id(entry("a", "clippy"))))
    sibling = open_registry(owner="host-2", node="capsync-host-2")
    sibling.apply(plan({}, by_id(entry("b", "ruff", owner="host-2"))))

    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(db_path)],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr
    expected = [["capsync-host-1", "a"], ["capsync-host-2", "b"], ["n-child", "child-worker"]]
    assert json.loads(child.stdout) == expected
    assert [[x.node, x.entry.id] for x in parent.entries()] == expected
    assert set(parent.snapshot().owned) == {"a"}


def test_concurrent_writers_wait_for_each_other(open_registry: Open) -> None:
    registries = [open_registry(owner=f"h{n}", node=f"n{n}", batch_size=1) for n in range(2)]
    errors: list[BaseException] = []

    def write(registry: SqliteRegistry, owner: str) -> None:
        try:
            registry.apply(
                plan({}, by_id(*(entry(f"{owner}-{i}", "x", owner=owner) for i in range(30))))
            )
        except BaseException as exc:  # reported below, in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(r, f"h{n}")) for n, r in enumerate(registries)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(registries[0].entries()) == 60


def test_newer_schema_version_is_refused(open_registry: Open, db_path: Path) -> None:
    open_registry().close()
    newer = SCHEMA_VERSION + 98
    raw(db_path, f"PRAGMA user_version = {newer}")

    with pytest.raises(RegistryError, match=rf"version {newer} .*\({SCHEMA_VERSION}\)"):
        open_registry()


@pytest.mark.parametrize("layout", ["parent-is-a-file", "path-is-a-directory"])
def test_unwritable_path_names_the_file(tmp_path: Path, layout: str) -> None:
    if layout == "parent-is-a-file":
        (tmp_path / "file").write_text("")
        path = tmp_path / "file" / "registry.db"
    else:
        path = tmp_path / "dir"
        path.mkdir()

    with pytest.raises(RegistryError, match="open failed") as caught:
        SqliteRegistry(path, Ownership(service="worker", owner="host-1", node="n"))
    assert str(path) in str(caught.value)
    assert caught.value.__cause__ is not None


def test_sqlite_errors_become_registry_errors(open_registry: Open, db_path: Path) -> None:
    registry = open_registry()
    registry.close()
    with pytest.raises(RegistryError, match=re.escape(f"{db_path}: snapshot failed")):
        registry.snapshot()
