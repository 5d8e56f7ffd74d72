"""One registry contract, every registry kind, in process: the in-memory registry, SQLite,
Redis and PostgreSQL (real servers, tests/services.py) and Consul (the double). A new kind
joins by one entry in ``PLACES``: how to open it, how another writer plants an entry
behind capsync's back, and an entry it refuses.

The cycle runs through ``Syncer`` with a scripted source, so every scenario is fast and
says what a user would see in the registry.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis as redis_client

from daemon.cycle import Syncer
from daemon.plan import Changes, DeletionGuard, Update
from daemon.query import Query
from daemon.registry.base import Registry
from daemon.registry.consul import ConsulRegistry
from daemon.registry.memory import MemoryCatalog, MemoryRegistry, _Node
from daemon.registry.ownership import Ownership
from daemon.registry.postgres import PostgresEndpoint, PostgresRegistry
from daemon.registry.redis import RedisEndpoint, RedisRegistry, connect
from daemon.registry.sqlite import SqliteRegistry
from daemon.registry.table import REGISTRY_KINDS
from daemon.registry_sync import RegistrySync, SyncOptions
from discovery import codec, full_entry, model, schema
from discovery.consul.client import ConsulClient, ConsulEndpoint
from discovery.consul.fields import service_fields
from discovery.sources.base import Listing
from tests.backends import OPENERS, PLACES, REGISTRIES
from tests.doubles.consul import ConsulDouble
from tests.proxy import Proxy
from tests.scripted_source import ScriptedSource
from tests.services import PostgresServer, RedisServer

OWNER = "host-1"


def entry(worker_id: str, *tools: str, owner: str = OWNER) -> codec.Entry:
    data = {"id": worker_id, "static_analysis_tools": [{"tool_name": t} for t in tools]}
    caps = schema.validate(data, ref="t")
    return codec.encode(
        caps, codec.Provenance(service="worker", owner=owner, source="file", ref=f"/{worker_id}")
    )


@dataclass
class Place:
    """Where one kind's registries live in a test, and what only that kind knows."""

    # (owner, service, writer) -> a registry on node capsync-<owner>
    open_at: Callable[[str, str, str], Registry]
    plant: Callable[[str, codec.Entry], None]  # another writer's entry on a node
    refusable: Callable[[], codec.Entry]  # an entry this kind refuses, as built
    # Something capsync did not write (no capsync meta, owner or hash) under an id on our
    # node; and what is stored under an id, raw, to see it untouched.
    squat: Callable[[str, str], None]
    raw: Callable[[str], Any]
    # The registry loses capsync's node and entries (deregistered by hand, a restarted
    # server, a restored older backup): nothing of ours is left.
    vanish: Callable[[str], None]
    # A store loses its bookkeeping ("sets": Redis's id sets; "node": the node hash or
    # row), not the entries.
    forget: Callable[[str], None] = lambda what: None
    outage: Callable[[Registry], None] = lambda registry: registry.close()  # stops answering
    opened: list[Registry] = field(default_factory=list)

    def open(self, owner: str = OWNER, service: str = "worker", writer: str = "host-a") -> Registry:
        registry = self.open_at(owner, service, writer)
        self.opened.append(registry)
        return registry


def _foreign_owner() -> codec.Entry:
    """SQLite and memory refuse an entry carrying another owner's id."""
    return entry("stray-1", owner="someone-else")


@pytest.fixture
def memory_place() -> Iterator[Place]:
    catalog = MemoryCatalog()

    def plant(node: str, e: codec.Entry) -> None:
        with catalog.lock:
            catalog.nodes.setdefault(node.lower(), _Node({})).services[e.id.lower()] = e

    def vanish(node: str) -> None:
        with catalog.lock:
            del catalog.nodes[node.lower()]

    def raw(worker_id: str) -> Any:
        with catalog.lock:
            return [n.services.get(worker_id.lower()) for n in catalog.nodes.values()]

    yield Place(
        lambda owner, service, writer: MemoryRegistry(
            Ownership(service=service, owner=owner, node=f"capsync-{owner}", writer=writer), catalog
        ),
        plant,
        _foreign_owner,
        lambda node, worker_id: plant(node, codec.Entry(worker_id, "worker", (), {})),
        raw,
        vanish,
    )


@pytest.fixture
def sqlite_place(tmp_path: Path) -> Iterator[Place]:
    path = tmp_path / "registry.db"

    def plant(node: str, e: codec.Entry) -> None:
        with closing(sqlite3.connect(path)) as db, db:
            db.execute(
                "INSERT INTO services (node, id, service, tags, meta, address, port)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (node, e.id, e.service, json.dumps(e.tags), json.dumps(dict(e.meta)), "", 0),
            )

    def vanish(node: str) -> None:
        with closing(sqlite3.connect(path)) as db, db:
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("DELETE FROM nodes WHERE name = ?", (node,))

    def raw(worker_id: str) -> Any:
        with closing(sqlite3.connect(path)) as db:
            return db.execute("SELECT * FROM services WHERE id = ?", (worker_id,)).fetchall()

    yield Place(
        lambda owner, service, writer: SqliteRegistry(
            path, Ownership(service=service, owner=owner, node=f"capsync-{owner}", writer=writer)
        ),
        plant,
        _foreign_owner,
        lambda node, worker_id: plant(node, codec.Entry(worker_id, "worker", (), {})),
        raw,
        vanish,
    )


@pytest.fixture
def consul_place() -> Iterator[Place]:
    with ConsulDouble() as double:

        def open_at(owner: str, service: str, writer: str) -> Registry:
            return ConsulRegistry(
                ConsulClient(ConsulEndpoint(double.address)),
                Ownership(service=service, owner=owner, node=f"capsync-{owner}", writer=writer),
            )

        def plant(node: str, e: codec.Entry) -> None:
            body = {
                "Node": node,
                "Address": "127.0.0.1",
                "SkipNodeUpdate": True,
                "Service": service_fields(e),
            }
            client = ConsulClient(ConsulEndpoint(double.address))
            try:
                assert client.put("/v1/catalog/register", body).status == 200
            finally:
                client.close()

        def refusable() -> codec.Entry:
            # Bypasses validation on purpose: Consul refuses a meta key with a space.
            good = entry("stray-1")
            return codec.Entry(good.id, "worker", (), {**good.meta, "bad key": "x"})

        def vanish(node: str) -> None:
            client = ConsulClient(ConsulEndpoint(double.address))
            try:
                assert client.put("/v1/catalog/deregister", {"Node": node}).status == 200
            finally:
                client.close()

        def raw(worker_id: str) -> Any:
            client = ConsulClient(ConsulEndpoint(double.address))
            try:
                body, _ = client.read("/v1/catalog/service/worker", list)
            finally:
                client.close()
            return [  # the instance itself (the node's meta moves with capsync's marks)
                {k: v for k, v in item.items() if k.startswith("Service")}
                for item in body
                if item["ServiceID"].lower() == worker_id.lower()
            ]

        yield Place(
            open_at,
            plant,
            refusable,
            lambda node, worker_id: plant(node, codec.Entry(worker_id, "worker", (), {})),
            raw,
            vanish,
            outage=lambda registry: double.stop(),
        )


def _nul_in_metadata() -> codec.Entry:
    """PostgreSQL refuses U+0000 in JSONB: built past validation, which refuses it."""
    caps = model.Capabilities(id="stray-1", metadata={"note": "a\x00b"})
    return codec.encode(
        caps, codec.Provenance(service="worker", owner=OWNER, source="file", ref="/stray-1")
    )


def _store_place(
    open_registry: Callable[[str, str, str, str], Registry],
    target: int,
    squat: Callable[[str, str], None],
    raw: Callable[[str], Any],
    vanish: Callable[[str], None],
    forget: Callable[[str], None],
    refusable: Callable[[], codec.Entry] = _foreign_owner,
) -> Iterator[Place]:
    """Redis or PostgreSQL, reached through a proxy so that an outage is the server
    going away; another writer plants an entry by writing it as its own owner."""
    proxy = Proxy(target)

    def open_at(owner: str, service: str, writer: str) -> Registry:
        return open_registry(owner, service, writer, f"127.0.0.1:{proxy.port}")

    def plant(node: str, e: codec.Entry) -> None:
        writer = open_at(e.owner, e.service, "planter")
        try:
            assert not writer.apply(Changes(create=(e,))).refused
        finally:
            writer.close()

    yield Place(
        open_at, plant, refusable, squat, raw, vanish, forget, lambda registry: proxy.close()
    )
    proxy.close()


@pytest.fixture
def redis_place(redis_server: RedisServer) -> Iterator[Place]:
    client = redis_client.Redis.from_url(f"redis://127.0.0.1:{redis_server.port}/3")
    client.flushdb()

    def squat(node: str, worker_id: str) -> None:
        client.set(worker_id, "written by someone else")

    def raw(worker_id: str) -> Any:
        return client.get(worker_id)

    def vanish(node: str) -> None:
        client.flushdb()  # a restarted server without persistence

    def forget(what: str) -> None:  # evicted
        if what == "sets":
            client.delete(f"capsync:owner:{OWNER}", "capsync:entries")
        else:
            client.delete(f"capsync:node:{OWNER}")

    yield from _store_place(
        lambda owner, service, writer, address: RedisRegistry(
            connect(RedisEndpoint(f"redis://{address}/3")),
            Ownership(service=service, owner=owner, node=f"capsync-{owner}", writer=writer),
        ),
        redis_server.port,
        squat,
        raw,
        vanish,
        forget,
    )
    client.close()


@pytest.fixture
def postgres_place(postgres_server: PostgresServer) -> Iterator[Place]:
    name = f"c{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    dsn = f"{postgres_server.dsn.rsplit('/', 1)[0]}/{name}"

    def squat(node: str, worker_id: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute("INSERT INTO worker_capabilities (id) VALUES (%s)", (worker_id,))

    def vanish(node: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as db:  # an older backup restored
            db.execute("DELETE FROM worker_capabilities")
            db.execute("DELETE FROM capsync_nodes")

    def forget(what: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute("DELETE FROM capsync_nodes")

    def raw(worker_id: str) -> Any:
        with psycopg.connect(dsn, autocommit=True) as db:
            query = "SELECT * FROM worker_capabilities WHERE lower(id) = lower(%s)"
            return db.execute(query, (worker_id,)).fetchall()

    yield from _store_place(
        lambda owner, service, writer, address: PostgresRegistry(
            PostgresEndpoint(f"postgresql://postgres@{address}/{name}?sslmode=disable"),
            Ownership(service=service, owner=owner, node=f"capsync-{owner}", writer=writer),
        ),
        postgres_server.port,
        squat,
        raw,
        vanish,
        forget,
        _nul_in_metadata,
    )


def test_every_registry_kind_is_in_the_one_table() -> None:
    """tests/backends.py's REGISTRIES names every kind, its place here and its openers."""
    assert set(REGISTRIES) == set(REGISTRY_KINDS.kinds)
    assert {o for tests in REGISTRIES.values() for o in tests.openers} == set(OPENERS)
    assert all(place in globals() for place in PLACES)


@pytest.fixture(params=PLACES)
def place(request: pytest.FixtureRequest) -> Iterator[Place]:
    opened: Place = request.getfixturevalue(request.param)
    yield opened
    for registry in opened.opened:
        registry.close()


def syncer(
    place: Place,
    *sources: ScriptedSource,
    owner: str = OWNER,
    service: str = "worker",
    writer: str = "host-a",
) -> Syncer:
    target = RegistrySync(
        "r", place.open(owner, service, writer), SyncOptions(service=service, owner=owner)
    )
    return Syncer(list(sources), [target])


def declared(*ids: str, tools: tuple[str, ...] = ("clippy",)) -> list[dict[str, Any]]:
    return [{"id": i, "static_analysis_tools": [{"tool_name": t} for t in tools]} for i in ids]


def test_round_trip(place: Place) -> None:
    desired = {e.id: e for e in (entry("rust-1", "clippy", "rustfmt"), entry("py-1", "ruff"))}
    registry = place.open()
    result = registry.apply(Changes(create=tuple(desired.values())))
    assert result.applied >= 2 and not result.refused
    assert dict(registry.snapshot().owned) == desired
    listed = {item.entry.id: item for item in registry.entries(Query())}
    assert {i: item.entry for i, item in listed.items()} == desired
    assert {item.node for item in listed.values()} == {f"capsync-{OWNER}"}
    assert codec.decode(listed["rust-1"].entry).all_tools() == ["clippy", "rustfmt"]


def test_cycle_creates_then_rests_then_deletes(place: Place) -> None:
    source = ScriptedSource(declarations=declared("a-1", "a-2", "a-3"))
    sync = syncer(place, source)
    first = sync.run_once().registries[0]
    assert len(first.changes.create) == 3 and first.ok
    assert sync.run_once().registries[0].changes.unchanged == 3
    source.declarations = declared("a-1", "a-2")
    third = sync.run_once().registries[0]
    assert [e.id for e in third.changes.delete] == ["a-3"]
    assert sorted(place.open().snapshot().owned) == ["a-1", "a-2"]


def test_ownership_other_owners_entries_are_never_touched(place: Place) -> None:
    theirs = ScriptedSource(declarations=declared("w-1", "w-2"))
    assert syncer(place, theirs, owner="other").run_once().ok
    ours = ScriptedSource(declarations=declared("w-1"))
    sync = syncer(place, ours)
    assert sync.run_once().ok
    ours.declarations = []
    sync.run_once()
    assert place.open().snapshot().owned == {}
    other = place.open("other")
    assert sorted(other.snapshot().owned) == ["w-1", "w-2"]
    nodes = {(item.node, item.entry.id) for item in other.entries(Query())}
    assert nodes == {("capsync-other", "w-1"), ("capsync-other", "w-2")}


def test_foreign_entry_on_our_node_is_a_conflict_never_written(place: Place) -> None:
    sync = syncer(place, ScriptedSource(declarations=declared("mine-1")))
    assert sync.run_once().ok  # our node exists now
    squatter = entry("taken-1", "semgrep", owner="someone-else")
    place.plant(f"capsync-{OWNER}", squatter)
    sync.sources[0] = ScriptedSource(declarations=declared("mine-1", "taken-1"))
    report = sync.run_once().registries[0]
    assert [c.worker_id for c in report.conflicts] == ["taken-1"]
    assert "another writer" in report.conflicts[0].reason
    snapshot = place.open().snapshot()
    assert "taken-1" in snapshot.foreign and "taken-1" not in snapshot.owned
    listed = {i.entry.id: i.entry for i in place.open().entries(Query())}
    assert listed["taken-1"] == squatter


def test_conflicts_first_source_wins(place: Place) -> None:
    first = ScriptedSource("first", declarations=declared("shared-1"))
    second = ScriptedSource("second", declarations=declared("shared-1", tools=("ruff",)))
    report = syncer(place, first, second).run_once().registries[0]
    assert [(c.worker_id, c.source) for c in report.conflicts] == [("shared-1", "second")]
    assert [e.id for e in report.changes.create] == ["shared-1"]
    [listed] = place.open().entries(Query())
    assert listed.entry.source == "first" and listed.entry.tags == ("clippy",)


def test_ids_compare_case_insensitively(place: Place) -> None:
    registry = place.open()
    old = entry("Rust-1", "clippy")
    registry.apply(Changes(create=(old,)))
    # A case-only rename is an update of the same entry, never a second one.
    assert registry.apply(Changes(update=(Update(old, entry("rust-1", "clippy")),))).refused == ()
    assert [i.entry.id for i in registry.entries(Query())] == ["rust-1"]


def test_batches_land_whole_and_stop_ends_after_the_batch_in_flight(place: Place) -> None:
    many = tuple(entry(f"w-{i:03d}") for i in range(150))
    registry = place.open()
    stopped = threading.Event()
    stopped.set()
    registry.snapshot()
    unsent = registry.apply(Changes(create=many), stopped)
    assert unsent.applied == 0 and unsent.unsent == 150 and not unsent.complete
    registry.snapshot()  # as every cycle does before it applies
    result = registry.apply(Changes(create=many))
    assert result.requests >= 1 and not result.refused
    assert len(registry.snapshot().owned) == 150
    updates = tuple(Update(e, entry(e.id, "clippy")) for e in many[:70])
    assert registry.apply(Changes(update=updates, delete=many[70:])).refused == ()
    owned = registry.snapshot().owned
    assert sorted(owned) == [e.id for e in many[:70]]
    assert all(e.tags == ("clippy",) for e in owned.values())


def test_refused_entry_is_reported_and_the_others_land(place: Place) -> None:
    registry = place.open()
    registry.snapshot()
    good = tuple(entry(f"ok-{i}") for i in range(5))
    result = registry.apply(Changes(create=(*good[:2], place.refusable(), *good[2:])))
    assert [r.id for r in result.refused] == ["stray-1"] and result.refused[0].reason
    assert result.written == {"create": 5} and not result.complete  # counted, not planned
    assert sorted(registry.snapshot().owned) == sorted(e.id for e in good)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (Query(), ["py-1", "rust-1", "rust-2"]),
        (Query(has=("clippy",)), ["rust-1", "rust-2"]),
        (Query(has=("clippy", "rustfmt")), ["rust-2"]),
        (Query(category="static_analysis", tools=("ruff", "rustfmt")), ["py-1", "rust-2"]),
    ],
    ids=["all", "has-one", "has-two", "category-tools"],
)
def test_query_narrowing_is_a_superset_and_matches_exactly(
    place: Place, query: Query, expected: list[str]
) -> None:
    registry = place.open()
    registry.apply(
        Changes(
            create=(
                entry("rust-1", "clippy"),
                entry("rust-2", "clippy", "rustfmt"),
                entry("py-1", "ruff"),
            )
        )
    )
    narrowed = registry.entries(query)
    matching = sorted(i.entry.id for i in narrowed if query.matches(codec.decode(i.entry)))
    assert matching == expected
    # Narrowed by the registry's own index: entries without any asked-for tool stay out.
    if query.has or query.tools:
        assert all(set(i.entry.tags) & set(query.has or query.tools) for i in narrowed)


def test_unreachable_registry_fails_the_cycle_and_changes_nothing(place: Place) -> None:
    source = ScriptedSource(declarations=declared("a-1"))
    sync = syncer(place, source)
    assert sync.run_once().ok
    place.outage(sync.registries[0].registry)
    source.declarations = []
    report = sync.run_once()
    assert not report.ok and report.registries[0].registry_error
    assert not report.registries[0].changes.writes


def test_full_form_round_trips_and_an_expiry_is_a_change(place: Place) -> None:
    """The library's full form comes back whole, and the clock alone changes the entry."""
    now = 1_767_225_600
    tool = {
        "tool_name": "clippy",
        "required": True,
        "permissions": {"network_access": True, "memory_limit_mb": 512},
        "expiration": {"expires_at": now + 10},
        "attestation": {
            "capability_hash": "0" * 64,
            "signature": "s",
            "public_key": "k",
            "timestamp": now - 60,
            "algorithm": "SHA256-RSA",
            "attester": "ci",
        },
        "verified": True,
    }
    source = ScriptedSource(
        declarations=[{"id": "full-1", "static_analysis_tools": [tool]}, *declared("plain-1")]
    )
    clock = [float(now)]
    target = RegistrySync("r", place.open(), SyncOptions(service="worker", owner=OWNER))
    sync = Syncer([source], [target], clock=lambda: clock[0])
    first = sync.run_once()
    assert first.ok and first.next_change == now + 11
    listed = {i.entry.id: i.entry for i in place.open().entries(Query())}
    full = full_entry.decode(listed["full-1"])
    assert full == schema.validate(source.declarations[0], ref="t")
    assert "clippy" in listed["full-1"].tags
    assert Query(verified=True, now=now).matches(full)
    assert sync.run_once().registries[0].changes.unchanged == 2
    clock[0] = now + 11  # clippy's expiry has passed
    later = sync.run_once()
    assert [u.new.id for u in later.registries[0].changes.update] == ["full-1"]
    entry = next(i.entry for i in place.open().entries(Query()) if i.entry.id == "full-1")
    assert "clippy" not in entry.tags and "expired:clippy" in entry.tags
    assert full_entry.decode(entry) == full and later.next_change is None


# Issue 10's rules, for every kind: owner and service, case folding, one writer per
# service, a guard with memory.


def test_two_services_of_one_owner_coexist(place: Place) -> None:
    web = syncer(place, ScriptedSource(declarations=declared("w-1", "w-2")), service="web")
    batch = syncer(place, ScriptedSource(declarations=declared("b-1")), service="batch")
    for _ in range(2):
        assert web.run_once().ok and batch.run_once().ok
    assert sorted(place.open(service="web").snapshot().owned) == ["w-1", "w-2"]
    snapshot = place.open(service="batch").snapshot()
    assert sorted(snapshot.owned) == ["b-1"] and {"w-1", "w-2"} <= snapshot.foreign
    batch.sources[0] = ScriptedSource(declarations=declared("b-1", "w-1"))
    report = batch.run_once().registries[0]
    assert [c.worker_id for c in report.conflicts] == ["w-1"]  # never taken over
    assert sorted(place.open(service="web").snapshot().owned) == ["w-1", "w-2"]


def test_case_only_rename_through_a_cycle_is_one_update(place: Place) -> None:
    source = ScriptedSource(declarations=declared("Rust-1"))
    sync = syncer(place, source)
    assert sync.run_once().ok
    source.declarations = declared("rust-1")
    changes = sync.run_once().registries[0].changes
    assert ([u.new.id for u in changes.update], changes.create, changes.delete) == (
        ["rust-1"],
        (),
        (),
    )
    assert list(place.open().snapshot().owned) == ["rust-1"]


def test_ids_differing_in_case_are_a_conflict_without_churn(place: Place) -> None:
    first = ScriptedSource("first", declarations=declared("w-1"))
    second = ScriptedSource("second", declarations=declared("W-1", tools=("ruff",)))
    sync = syncer(place, first, second)
    report = sync.run_once().registries[0]
    assert [(c.worker_id, c.source) for c in report.conflicts] == [("W-1", "second")]
    again = sync.run_once().registries[0]
    assert again.changes.unchanged == 1 and not again.changes.writes
    [listed] = place.open().entries(Query())
    assert (listed.entry.id, listed.entry.source) == ("w-1", "first")


def test_foreign_entry_in_another_case_is_never_overwritten(place: Place) -> None:
    sync = syncer(place, ScriptedSource(declarations=declared("mine-1")))
    assert sync.run_once().ok
    squatter = entry("Taken-1", "semgrep", owner="someone-else")
    place.plant(f"capsync-{OWNER}", squatter)
    sync.sources[0] = ScriptedSource(declarations=declared("mine-1", "taken-1"))
    report = sync.run_once().registries[0]
    assert [c.worker_id for c in report.conflicts] == ["taken-1"]
    listed = {i.entry.id.lower(): i.entry for i in place.open().entries(Query())}
    assert listed["taken-1"] == squatter


def test_a_second_writer_of_the_same_owner_and_service_writes_nothing(place: Place) -> None:
    source = ScriptedSource(declarations=declared("a-1", "a-2"))
    assert syncer(place, source, writer="host-a").run_once().ok
    intruder = syncer(place, ScriptedSource(declarations=declared("b-1")), writer="host-b")
    report = intruder.run_once().registries[0]
    assert not report.ok and "host-a" in report.registry_error
    assert sorted(place.open().snapshot().owned) == ["a-1", "a-2"]
    assert syncer(place, source, writer="host-a").run_once().ok  # the holder goes on


def test_deletions_sliced_across_cycles_are_held(place: Place) -> None:
    source = ScriptedSource(declarations=declared(*(f"w-{i:03}" for i in range(100))))
    sync = syncer(place, source)
    assert sync.run_once().ok
    source.declarations = source.declarations[45:]  # 45 of 100: under half, deleted
    assert len(sync.run_once().registries[0].changes.delete) == 45
    source.declarations = source.declarations[40:]  # 85 of the high-water mark 100
    report = sync.run_once().registries[0]
    assert len(report.changes.held) == 40 and not report.changes.delete
    assert "high-water mark" in report.changes.held_reason
    assert len(place.open().snapshot().owned) == 55


# Issue 22: the registry's edge states, every kind.


def test_an_id_held_by_something_capsync_did_not_write_is_a_conflict(place: Place) -> None:
    """Left alone, reported with its id, and the cycle succeeds for everything else,
    this cycle and the next (which does not try to write it again)."""
    sync = syncer(place, ScriptedSource(declarations=declared("mine-1")))
    assert sync.run_once().ok
    place.squat(f"capsync-{OWNER}", "taken-1")
    before = place.raw("taken-1")
    sync.sources[0] = ScriptedSource(declarations=declared("mine-1", "taken-1", "new-1"))
    first = sync.run_once()
    assert first.ok, first.registries[0]
    assert [c.worker_id for c in first.registries[0].conflicts] == ["taken-1"]
    again = sync.run_once()
    assert again.ok and [c.worker_id for c in again.registries[0].conflicts] == ["taken-1"]
    assert not again.registries[0].changes.writes
    assert sorted(place.open().snapshot().owned) == ["mine-1", "new-1"]
    assert place.raw("taken-1") == before


class _PlantedAfterSnapshot:
    """A registry whose snapshot is followed, before the apply, by another writer's
    entry under an id the cycle is about to create."""

    def __init__(self, registry: Registry, plant: Callable[[], None]) -> None:
        self.registry, self.plant = registry, plant

    def snapshot(self) -> Any:
        taken = self.registry.snapshot()
        self.plant()
        return taken

    def __getattr__(self, name: str) -> Any:
        return getattr(self.registry, name)


def test_an_entry_planted_between_snapshot_and_apply_is_a_conflict(place: Place) -> None:
    assert syncer(place, ScriptedSource(declarations=declared("mine-1"))).run_once().ok
    squatter = entry("late-1", "semgrep", owner="someone-else")
    registry = _PlantedAfterSnapshot(
        place.open(), lambda: place.plant(f"capsync-{OWNER}", squatter)
    )
    target = RegistrySync("r", registry, SyncOptions(service="worker", owner=OWNER))  # type: ignore[arg-type]
    source = ScriptedSource(declarations=declared("mine-1", "late-1"))
    cycle = Syncer([source], [target]).run_once()
    report = cycle.registries[0]
    assert cycle.ok, report
    assert [c.worker_id for c in report.conflicts] == ["late-1"]
    assert report.conflicts[0].source == "scripted"
    listed = {i.entry.id: i.entry for i in place.open().entries(Query())}
    assert listed["late-1"] == squatter and "mine-1" in listed


def test_a_vanished_node_is_registered_again_with_its_entries(place: Place) -> None:
    """Absence is read from the registry: the next cycle recreates what was lost."""
    source = ScriptedSource(declarations=declared("a-1", "a-2", "a-3"))
    sync = syncer(place, source)
    assert sync.run_once().ok
    place.vanish(f"capsync-{OWNER}")
    again = sync.run_once()
    assert again.ok, again.registries[0]
    assert len(again.registries[0].changes.create) == 3
    assert sorted(place.open().snapshot().owned) == ["a-1", "a-2", "a-3"]
    assert sync.run_once().registries[0].changes.unchanged == 3


def test_consul_tells_a_node_hidden_by_acls_from_a_vanished_one() -> None:
    """Consul 1.11+ says when ACLs filtered a read: that node is not recreated over, and
    the cycle fails with what to grant; a truly missing node is registered again."""
    with ConsulDouble(acl_token="root") as double:

        def registry(token: str | None) -> ConsulRegistry:
            return ConsulRegistry(
                ConsulClient(ConsulEndpoint(double.address, token=token)),
                Ownership(service="worker", owner=OWNER, node=f"capsync-{OWNER}"),
            )

        writer = registry("root")
        assert writer.apply(Changes(create=(entry("a-1"),))).applied == 1
        blind = registry(None)  # the anonymous token: default deny
        sync = Syncer(
            [ScriptedSource(declarations=declared("a-1"))],
            [RegistrySync("consul", blind, SyncOptions(service="worker", owner=OWNER))],
        )
        report = sync.run_once().registries[0]
        assert "X-Consul-Results-Filtered-By-ACLs" in report.registry_error
        assert "node:read" in report.registry_error and not report.changes.writes
        assert list(writer.snapshot().owned) == ["a-1"]
        writer.close()
        blind.close()


@pytest.mark.parametrize("which", ["redis_place", "postgres_place"])
@pytest.mark.parametrize("lose", ["sets", "node"])
def test_lost_bookkeeping_is_rebuilt_from_what_each_entry_records(
    request: pytest.FixtureRequest, which: str, lose: str
) -> None:
    """The stores keep bookkeeping beside the entries (Redis: the owner's set and the set
    of every id, the node hash; PostgreSQL: the node row). Losing it never turns
    capsync's own entries into someone else's: they are still owned, still deleted."""
    place: Place = request.getfixturevalue(which)
    source = ScriptedSource(declarations=declared("a-1", "a-2", "a-3"))
    sync = syncer(place, source)
    assert sync.run_once().ok
    place.forget(lose)
    again = sync.run_once()
    assert again.ok and again.registries[0].changes.unchanged == 3, again.registries[0]
    assert not again.registries[0].conflicts
    source.declarations = declared("a-1", "a-2")
    last = sync.run_once().registries[0]
    assert [e.id for e in last.changes.delete] == ["a-3"] and last.ok
    assert sorted(place.open().snapshot().owned) == ["a-1", "a-2"]
    for registry in place.opened:
        registry.close()


def test_deletions_sliced_across_restarts_are_held(place: Place) -> None:
    """The guard's marks live in the registry beside the writer claim: each run a new
    process (``run --once`` from a timer, a crash-looping daemon) still remembers."""
    ids = [f"w-{i:03}" for i in range(100)]

    def run_once(keep: list[str]) -> Any:
        return syncer(place, ScriptedSource(declarations=declared(*keep))).run_once()

    assert run_once(ids).ok
    assert len(run_once(ids[45:]).registries[0].changes.delete) == 45  # under half
    report = run_once(ids[85:]).registries[0]  # 85 of the recorded mark of 100
    assert len(report.changes.held) == 40 and not report.changes.delete
    assert "from 100 entries" in report.changes.held_reason
    assert len(place.open().snapshot().owned) == 55
    # An allowed mass deletion is the new baseline, recorded too.
    allowed = RegistrySync(
        "r",
        place.open(),
        SyncOptions(service="worker", owner=OWNER, guard=DeletionGuard(allow=True)),
    )
    source = ScriptedSource(declarations=declared(*ids[85:]))
    assert len(Syncer([source], [allowed]).run_once().registries[0].changes.delete) == 40
    assert len(run_once(ids[90:]).registries[0].changes.delete) == 5


@dataclass
class _Unchanged:
    """A source that hands back the very same Listing every time, as the file source
    does while no file changed: the cycle then reuses its last plan for as long as the
    registry hands back the same snapshot."""

    listing: Listing
    name: str = "scripted"

    def list(self) -> Listing:
        return self.listing

    def close(self) -> None:
        """Nothing held."""


def test_a_change_made_behind_steady_cycles_is_repaired_by_the_next(place: Place) -> None:
    """Steady cycles reuse what they read while the registry's version says nothing was
    written; losing the node and its entries to someone else moves that version, so the
    next cycle sees it and writes them back."""
    source = _Unchanged(ScriptedSource(declarations=declared("a-1", "a-2", "a-3")).list())
    sync = syncer(place, source)
    assert len(sync.run_once().registries[0].changes.create) == 3
    for _ in range(3):
        steady = sync.run_once().registries[0]
        assert steady.ok and steady.changes.unchanged == 3 and not steady.changes.writes
    place.vanish(f"capsync-{OWNER}")
    again = sync.run_once().registries[0]
    assert again.ok, again
    assert len(again.changes.create) == 3
    assert sorted(place.open().snapshot().owned) == ["a-1", "a-2", "a-3"]
