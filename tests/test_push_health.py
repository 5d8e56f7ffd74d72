"""The health of a worker that registered itself: live while its connection lives,
warning once the connection closed (it leaves after its grace period), warning when a
lease runs out unrenewed. Real WebSocket and HTTP clients, a running daemon, the Consul
double."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from discovery.inbox import Registration, SqliteInbox
from discovery.proto import registry_pb2 as pb
from discovery.sources.inbox import LEASE_WARNING, PushSource
from tests.conftest import run_cli
from tests.consul_target import ConsulTarget
from tests.daemon_process import wait_until
from tests.doubles.consul import ConsulDouble
from tests.grpc_daemon import GrpcDaemon
from tests.push_daemon import PushDaemon, send
from tests.test_grpc_api import held_open

GRACE = 4.0


@pytest.fixture
def target() -> Iterator[ConsulTarget]:
    with ConsulDouble() as double:
        yield ConsulTarget(double.address, double)


@pytest.fixture
def push(target: ConsulTarget, tmp_path: Path) -> Iterator[PushDaemon]:
    env = {"CAPSYNC_API__GRACE": f"{GRACE}s", "CAPSYNC_DAEMON__HEALTH_MIN_TIME": "0"}
    proc = PushDaemon(target, tmp_path, env=env).started()
    yield proc
    assert proc.stop() == 0


def check(target: ConsulTarget, worker: str) -> tuple[str, str]:
    rows = target.get(f"/v1/health/node/{target.node}")
    found = [(r["Status"], r["Output"]) for r in rows if r["ServiceID"] == worker]
    return found[0] if found else ("", "")


def test_a_websocket_worker_goes_warning_on_disconnect_and_leaves_after_its_grace(
    push: PushDaemon, target: ConsulTarget
) -> None:
    with push.websocket() as ws:
        assert send(ws, {"action": "Register", "capabilities": {"id": "ws-live"}})["ok"]
        wait_until(lambda: check(target, "ws-live")[0] == "passing")
    wait_until(lambda: check(target, "ws-live")[0] == "warning", 10, 0.05)
    _, output = check(target, "ws-live")
    assert output.startswith("websocket: connection closed at ")
    assert "unless it registers again" in output
    assert "ws-live" in target.services()  # still there, in its grace period
    wait_until(lambda: "ws-live" not in target.services(), 3 * GRACE)
    assert check(target, "ws-live") == ("", "")  # its check left with it


def test_a_worker_coming_back_in_its_grace_is_passing_again(
    push: PushDaemon, target: ConsulTarget
) -> None:
    with push.websocket() as ws:
        assert send(ws, {"action": "Register", "capabilities": {"id": "ws-back"}})["ok"]
        wait_until(lambda: check(target, "ws-back")[0] == "passing")
    wait_until(lambda: check(target, "ws-back")[0] == "warning", 10, 0.05)
    with push.websocket() as ws:
        assert send(ws, {"action": "Register", "capabilities": {"id": "ws-back"}})["ok"]
        wait_until(lambda: check(target, "ws-back")[0] == "passing")


def test_a_lease_about_to_run_out_is_warning(tmp_path: Path) -> None:
    clock = [1000.0]
    inbox = SqliteInbox(tmp_path / "inbox.db")
    inbox.put(
        [
            Registration("soon", {"id": "soon"}, "rest", expires=1000 + LEASE_WARNING - 1),
            Registration("later", {"id": "later"}, "rest", expires=1000 + 3 * LEASE_WARNING),
            Registration("bound", {"id": "bound"}, "websocket", expires=1001, conn="c1"),
            Registration("forever", {"id": "forever"}, "rest"),
        ]
    )
    source = PushSource(inbox, clock=lambda: clock[0])
    try:
        health = {d.ref: d.health.status for d in source.list().declarations}
        assert health == {
            "rest/soon": "warning",
            "rest/later": "passing",
            "websocket/bound": "passing",  # renewed by its live connection
            "rest/forever": "passing",
        }
        inbox.release("c1", at=1000.5, until=1004)
        [bound] = [d for d in source.list().declarations if d.ref == "websocket/bound"]
        assert bound.health.status == "warning"
        assert inbox.get("bound") == Registration(
            "bound", {"id": "bound"}, "websocket", expires=1004, conn=None, released=1000.5
        )
    finally:
        inbox.close()


def _metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def test_a_health_change_is_an_event_and_counted_on_status_metrics_and_the_summary(
    push: PushDaemon, target: ConsulTarget
) -> None:
    with push.websocket("/workers/watch") as watch:
        assert json.loads(watch.recv(timeout=10))["type"] == "snapshot"
        with push.websocket() as ws:
            assert send(ws, {"action": "Register", "capabilities": {"id": "ws-seen"}})["ok"]
            created = json.loads(watch.recv(timeout=10))
            assert (created["action"], created["health"]["status"]) == ("created", "passing")
        health = json.loads(watch.recv(timeout=10))
    assert (health["action"], health["id"]) == ("health", "ws-seen")
    assert health["health"]["status"] == "warning"
    assert health["health"]["output"].startswith("websocket: connection closed at ")
    assert health["declaration"]["id"] == "ws-seen"

    [registry] = push.status()["last_cycle"]["registries"].values()
    assert registry["health"] == {"passing": 0, "warning": 1, "critical": 0}
    metrics = push.get("/metrics").text
    assert _metric(metrics, "capsync_registry_health", status="warning") == 1
    assert _metric(metrics, "capsync_registry_health", status="passing") == 0
    push.wait_for(lambda line: "event=cycle" in line and "1 health updates" in line)


def test_a_grpc_session_ending_is_a_health_event_on_the_grpc_watch(
    target: ConsulTarget, tmp_path: Path
) -> None:
    env = {"CAPSYNC_API__GRACE": f"{GRACE}s", "CAPSYNC_DAEMON__HEALTH_MIN_TIME": "0"}
    daemon = GrpcDaemon(target, tmp_path, env=env).started()
    try:
        stub = daemon.stub()
        watch = stub.Watch(pb.WatchRequest(), timeout=60)
        assert next(watch).WhichOneof("kind") == "snapshot"
        opened = threading.Event()
        register = pb.CapabilityUpdate(
            action=pb.CapabilityUpdate.REGISTER,
            capabilities=pb.WorkerCapabilitiesProto(id="g-1"),
        )
        session = stub.Session(held_open([register], opened), metadata=daemon.metadata())
        assert next(session).ok
        created = next(watch).event
        assert (created.action, created.entry.health.status) == (pb.Event.CREATED, "passing")
        session.cancel()  # the stream is cut: the worker is in its grace period
        event = next(watch).event
        assert (event.action, event.entry.id) == (pb.Event.HEALTH, "g-1")
        assert event.entry.health.status == "warning"
        assert event.entry.health.output.startswith("grpc: connection closed at ")
        assert check(target, "g-1")[0] == "warning"
        listed = stub.List(pb.ListRequest(), timeout=10).workers
        assert [(w.capabilities.id, w.health.status) for w in listed] == [("g-1", "warning")]
        assert list(stub.List(pb.ListRequest(healthy=True), timeout=10).workers) == []
        opened.set()
        watch.cancel()
    finally:
        assert daemon.stop() == 0


def test_healthy_queries_over_rest_and_the_cli(push: PushDaemon, target: ConsulTarget) -> None:
    with push.websocket() as ws:
        assert send(ws, {"action": "Register", "capabilities": {"id": "gone-soon"}})["ok"]
        assert push.register({"id": "steady"}).ok
        wait_until(lambda: {"gone-soon", "steady"} <= set(target.services()))
    wait_until(lambda: check(target, "gone-soon")[0] == "warning", 10, 0.05)
    every = requests.get(f"http://{push.address}/workers", timeout=10).json()
    assert {w["id"]: w["health"]["status"] for w in every} == {
        "gone-soon": "warning",
        "steady": "passing",
    }
    healthy = requests.get(f"http://{push.address}/workers?healthy=true", timeout=10).json()
    assert [w["id"] for w in healthy] == ["steady"]
    args = ["--owner", target.owner, "--json"]
    found = run_cli("find", "--healthy", *args, env=target.env())
    assert found.returncode == 0, found.stderr
    assert [w["id"] for w in json.loads(found.stdout)] == ["steady"]
