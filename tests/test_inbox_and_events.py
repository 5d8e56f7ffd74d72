"""The inbox's two stores through one contract (SQLite, Consul KV on the double), and the
change-event bus: sequence numbers, snapshots, resuming, slow subscribers."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from config.errors import SourceError
from daemon.events import EventBus
from discovery import codec
from discovery.consul.client import ConsulEndpoint
from discovery.inbox import PURGE_AFTER, Inbox, Registration, SqliteInbox
from discovery.inbox_consul import ConsulInbox
from discovery.model import Capabilities
from discovery.sources.inbox import PushSource
from tests.doubles.consul import ConsulDouble, Fault


@pytest.fixture(params=["sqlite", "consul"])
def inbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Inbox]:
    if request.param == "sqlite":
        store: Inbox = SqliteInbox(tmp_path / "inbox.db")
        yield store
        store.close()
        return
    with ConsulDouble() as double:
        store = ConsulInbox(ConsulEndpoint(double.address), "capsync/inbox")
        yield store
        store.close()


def test_inbox_contract(inbox: Inbox) -> None:
    inbox.put(
        [
            Registration("Rust-1", {"id": "Rust-1"}, "rest"),
            Registration("ws-1", {"id": "ws-1"}, "websocket", 100.0, "conn-a"),
            Registration("ws-2", {"id": "ws-2"}, "websocket", 100.0, "conn-b"),
        ]
    )
    assert inbox.get("rust-1") == Registration("Rust-1", {"id": "Rust-1"}, "rest")
    inbox.put([Registration("RUST-1", {"id": "RUST-1"}, "rest", 50.0)])  # case-only rename
    assert [r.id for r in inbox.all()] == ["RUST-1", "ws-1", "ws-2"]
    inbox.renew(["conn-a"], 500.0)
    assert {r.id: r.expires for r in inbox.all()} == {"RUST-1": 50.0, "ws-1": 500.0, "ws-2": 100.0}
    assert inbox.purge(120.0) == 2
    assert [r.id for r in inbox.all()] == ["ws-1"]
    assert inbox.remove("WS-1") is True
    assert inbox.remove("ws-1") is False
    assert inbox.all() == [] and inbox.get("ws-1") is None


def test_consul_inbox_down_is_a_source_error() -> None:
    with ConsulDouble() as double:
        double.stop()
        store = ConsulInbox(ConsulEndpoint(double.address), "capsync/inbox")
        with pytest.raises(SourceError, match="cannot reach Consul"):
            store.put([Registration("a", {"id": "a"}, "rest")])
        store.close()


def test_consul_inbox_reads_only_consuls_clean_answers() -> None:
    """A proxy's 404 (no X-Consul-Index) is no empty inbox: the read fails, and the push
    source keeps its entries; Consul's own 404 is an empty inbox."""
    with ConsulDouble() as double:
        store = ConsulInbox(ConsulEndpoint(double.address), "capsync/inbox")
        assert store.all() == []  # Consul's own 404, with its index
        store.put([Registration("a", {"id": "a"}, "rest")])
        double.inject(Fault(path="/v1/kv/capsync/inbox", status=404, body="Not Found"))
        with pytest.raises(SourceError, match="not Consul's clean answer"):
            store.all()
        with pytest.raises(SourceError, match="404"):
            store.get("a")
        double.clear_faults()
        assert [r.id for r in store.all()] == ["a"]
        store.close()


class _Racing(ConsulInbox):
    """Another daemon writes between this inbox's read and its check-and-set, once."""

    def __init__(self, *args: Any, newer: Registration) -> None:
        super().__init__(*args)
        self.newer: Registration | None = newer

    def _items(self, key: str, *, recurse: bool) -> Any:
        found = super()._items(key, recurse=recurse)
        if self.newer is not None:
            newer, self.newer = self.newer, None
            self.put([newer])
        return found


def test_consul_inbox_renewal_never_reverts_a_newer_write() -> None:
    with ConsulDouble() as double:
        newer = Registration("ws-1", {"id": "ws-1", "flags": {"v2": True}}, "websocket", 90.0, "c")
        store = _Racing(ConsulEndpoint(double.address), "capsync/inbox", newer=newer)
        store.put([Registration("ws-1", {"id": "ws-1"}, "websocket", 50.0, "c")])
        store.renew(["c"], 500.0)
        [renewed] = store.all()
        assert renewed.body == newer.body and renewed.expires == 500.0
        store.newer = Registration("ws-1", {"id": "ws-1", "flags": {"v3": True}}, "rest")
        assert store.purge(1000.0) == 0  # refreshed since read: not purged
        assert [r.body for r in store.all()] == [{"id": "ws-1", "flags": {"v3": True}}]
        store.close()


def _entry(worker_id: str, tag: str = "") -> codec.Entry:
    caps = Capabilities(id=worker_id, flags={tag: True} if tag else {})
    return codec.encode(
        caps, codec.Provenance(service="worker", owner="me", source="push", ref=worker_id)
    )


def test_bus_numbers_changes_and_resumes() -> None:
    bus = EventBus()
    assert bus.update("consul", {"a": _entry("a")})[0].action == "created"
    start, sub = bus.subscribe()
    assert start.snapshot and start.sequence == 1 and list(start.entries["consul"]) == ["a"]
    events = bus.update("consul", {"a": _entry("a", "gpu"), "b": _entry("b")})
    assert [(e.sequence, e.action, e.id) for e in events] == [
        (2, "updated", "a"),
        (3, "created", "b"),
    ]
    assert bus.update("sqlite", {}) == []
    bus.update("consul", {"b": _entry("b")})
    assert [(e.action, e.id) for e in sub.drain()] == [
        ("updated", "a"),
        ("created", "b"),
        ("deleted", "a"),
    ]
    assert events[0].as_json()["declaration"]["flags"] == {"gpu": True}
    resumed, _ = bus.subscribe(2, stream=bus.stream)
    assert not resumed.snapshot and [e.sequence for e in resumed.events] == [3, 4]
    other, _ = bus.subscribe(2, stream="another")
    assert other.snapshot and list(other.entries["consul"]) == ["b"]


def test_slow_subscriber_is_dropped_and_never_blocks() -> None:
    bus = EventBus(queue=10, history=5)
    _, slow = bus.subscribe()
    _, fast = bus.subscribe()
    for i in range(4):
        bus.update("consul", {f"w{j}": _entry(f"w{j}") for j in range(i * 4)})
        fast.drain()
    assert slow.dropped.startswith("slow subscriber") and slow.drain() == []
    assert not fast.dropped and bus.subscribers == 1
    start, _ = bus.subscribe(1, stream=bus.stream)  # out of the history: a snapshot
    assert start.snapshot


def test_a_subscriber_whose_loop_is_gone_is_dropped() -> None:
    bus = EventBus()

    def gone() -> None:
        raise RuntimeError("Event loop is closed")

    _, sub = bus.subscribe(wakeup=gone)
    bus.update("consul", {"a": _entry("a")})
    assert "subscriber gone" in sub.dropped and bus.subscribers == 0


def test_threaded_subscriber_waits_for_events() -> None:
    bus = EventBus()
    _, sub = bus.subscribe()
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.extend(e.id for e in sub.wait(10)))
    reader.start()
    bus.update("consul", {"a": _entry("a")})
    reader.join(10)
    assert got == ["a"]


def test_the_inbox_view_costs_what_is_live(inbox: Inbox) -> None:
    """A listing sees the live rows only (a released one in its grace is live), the
    leases that ran out since the last look, and the expired rows as counts."""
    inbox.put(
        [Registration(f"old-{i}", {"id": f"old-{i}"}, "rest", 1000.0 + i) for i in range(50)]
        + [
            Registration("forever", {"id": "forever"}, "rest"),
            Registration("leased", {"id": "leased"}, "rest", 200_000.0),
            Registration("ws-1", {"id": "ws-1"}, "websocket", 200_000.0, "conn-a"),
            Registration("ran-out", {"id": "ran-out"}, "rest", 150_000.0),
        ]
    )
    inbox.release("conn-a", 149_000.0, 150_500.0)
    view = inbox.view(150_000.0, 140_000.0)
    assert [r.id for r in view.live] == ["forever", "leased", "ws-1"]
    assert view.live[2].released == 149_000.0
    assert [r.id for r in view.expired_since] == ["ran-out"]
    assert (view.expired, view.purgeable) == (51, 50)
    assert inbox.view(150_000.0, None).expired_since == []
    assert inbox.purge(150_000.0 - PURGE_AFTER) == 50
    assert inbox.view(150_000.0, 150_000.0).expired == 1


@pytest.fixture(params=["sqlite", "consul"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Inbox]]:
    """Opens connections to one store: what two processes (or daemons) share."""
    if request.param == "sqlite":
        yield lambda: SqliteInbox(tmp_path / "inbox.db")
        return
    with ConsulDouble() as double:
        yield lambda: ConsulInbox(ConsulEndpoint(double.address), "capsync/inbox")


def test_the_watch_judges_a_quiet_inbox_by_the_clock_and_sees_another_writer(
    opener: Callable[[], Inbox],
) -> None:
    """With nothing written, a lease still goes warning and then runs out (by the clock,
    the SQLite inbox not read again: its version did not move); a write through another
    connection to the same store is seen."""
    inbox = opener()
    now = [1000.0]
    reads: list[float] = []
    view = inbox.view
    inbox.view = lambda at, since: reads.append(at) or view(at, since)  # type: ignore[method-assign]
    source = PushSource(inbox, clock=lambda: now[0])
    inbox.put([Registration("leased", {"id": "leased"}, "rest", 1030.0)])
    source.list()
    heard: queue.SimpleQueue[str] = queue.SimpleQueue()
    stop = threading.Event()
    watch = threading.Thread(target=source.watch, args=(heard.put, stop), daemon=True)
    watch.start()
    try:
        _wait(lambda: len(reads) >= 2)  # the listing's read, then the watch's first
        now[0] = 1025.0
        assert heard.get(timeout=10) == "push: lease of leased runs out in 10s"
        now[0] = 1031.0
        assert heard.get(timeout=10) == "push: lease of leased expired"
        if isinstance(inbox, SqliteInbox):
            assert len(reads) == 2  # judged again by the clock, not read
        source.list()
        other = opener()
        other.put([Registration("elsewhere", {"id": "elsewhere"}, "rest")])
        other.close()
        assert heard.get(timeout=10) == "push: the inbox changed"
    finally:
        stop.set()
        watch.join(5)
        inbox.close()


def _wait(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "condition not met within 10 s"
        time.sleep(0.02)
