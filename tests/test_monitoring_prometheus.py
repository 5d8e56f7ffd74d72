"""The shipped dashboard and alert rules against a real Prometheus scraping a live daemon.

One daemon with every front end on (REST, WebSocket, gRPC, an amqp source, the AMQP
event publisher) syncs a fleet into SQLite: every query of every dashboard panel returns
series, /metrics passes ``promtool check metrics``, and no alert is pending for it. Then a
reload adds a registry whose writer claim another host holds and a source that cannot
list: the matching alerts go pending, the healthy registry's do not.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from websockets.sync.client import connect

from discovery import schema
from discovery.proto import registry_pb2 as pb
from discovery.proto import registry_pb2_grpc as pb_grpc
from discovery.proto_convert import to_proto
from tests.conftest import run_cli
from tests.daemon_process import Daemon, wait_until
from tests.prometheus import DASHBOARD, RULES, Prometheus, promtool
from tests.rabbitmq import Broker
from tests.test_sync_contract import EXAMPLES

OWNER = "monitored"
TOKEN = "mon-tok-5e4d3c2b1a"
RATE_INTERVAL = "30s"  # $__rate_interval: 30 scrapes at the fixture's 1 s


def toml(table: dict[str, Any]) -> str:
    return "\n".join(f"{key} = {json.dumps(value)}" for key, value in table.items())


def sqlite_registry(name: str, path: Path, **extra: str) -> str:
    fields = {"name": name, "backend": "sqlite", "path": str(path), "owner": OWNER, **extra}
    return "[[registries]]\n" + toml(fields)


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel, as Grafana sends them for
    one instance."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def for_instance(expr: str, address: str) -> str:
    return expr.replace("$instance", address).replace("$__rate_interval", RATE_INTERVAL)


def active(server: Prometheus, address: str, state: str = "") -> set[tuple[str, str]]:
    """(alert name, its registry or source label) of the alerts active for ``address``
    (pending or firing; only those in ``state`` when given)."""
    return {
        (a["labels"]["alertname"], a["labels"].get("registry") or a["labels"].get("source", ""))
        for a in server.alerts()
        if a["labels"].get("instance") == address and state in ("", a["state"])
    }


class Fleet:
    """A daemon's configuration on disk, with what a reload adds."""

    def __init__(self, directory: Path, broker: Broker) -> None:
        self.directory = directory
        self.queue = f"worker.capabilities.{uuid.uuid4().hex[:8]}"
        self.workers = directory / "fleet"
        shutil.copytree(EXAMPLES, self.workers)
        (directory / "api-token").write_text(TOKEN + "\n")
        self.config = directory / "capsync.toml"
        self.base = "\n\n".join(
            [
                "[api]\n" + toml({"token_file": str(directory / "api-token")}),
                "[grpc]\n" + toml({"listen": "127.0.0.1:0"}),
                "[amqp_events]\n"
                + toml(
                    {"enabled": True, "url": broker.url, "outbox": str(directory / "outbox.db")}
                ),
                sqlite_registry("local", directory / "local.db"),
                "[[sources]]\n" + toml({"type": "file", "path": str(self.workers)}),
                "[[sources]]\n" + toml({"type": "push", "path": str(directory / "inbox.db")}),
                "[[sources]]\n"
                + toml(
                    {
                        "type": "amqp",
                        "url": broker.url,
                        "queue": self.queue,
                        "path": str(directory / "amqp-inbox.db"),
                    }
                ),
            ]
        )
        self.config.write_text(self.base + "\n")

    def claimed_elsewhere(self) -> str:
        """A SQLite registry another host synced the fleet into first: its writer claim
        is that host's."""
        path = self.directory / "claimed.db"
        other = self.directory / "other.toml"
        other.write_text(
            sqlite_registry("claimed", path, writer="other-host")
            + "\n[[sources]]\n"
            + toml({"type": "file", "path": str(self.workers)})
            + "\n"
        )
        result = run_cli("run", "--once", "--config", str(other))
        assert result.returncode == 0, result.stderr
        return sqlite_registry("claimed", path, writer="this-host")

    def add_failures(self) -> None:
        """The reload's configuration: the claimed registry and a source that is gone."""
        gone = "[[sources]]\n" + toml(
            {"type": "file", "name": "gone", "path": str(self.directory / "gone")}
        )
        self.config.write_text("\n\n".join([self.base, self.claimed_elsewhere(), gone]) + "\n")


@pytest.fixture
def monitored(tmp_path: Path, rabbitmq: Broker) -> Iterator[tuple[Daemon, Fleet, str]]:
    fleet = Fleet(tmp_path, rabbitmq)
    proc = Daemon(["--config", str(fleet.config), "--interval", "300s"]).started()
    grpc_address = proc.wait_for(lambda line: "event=started" in line).split("grpc=", 1)[1]
    try:
        yield proc, fleet, grpc_address.split()[0].strip('"')
    finally:
        assert proc.stop() == 0


@contextmanager
def front_ends_used(
    proc: Daemon, grpc_address: str, broker: Broker, fleet: Fleet
) -> Iterator[None]:
    """A registration through each front end, and an invalid one through REST. The
    WebSocket stays open until the end: its registration is bound to it."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = f"http://{proc.address}/workers/register"
    ok = requests.post(url, json={"id": "rest-1"}, headers=auth, timeout=10)
    assert ok.status_code == 200, ok.text
    bad = requests.post(url, json={"id": "bad id"}, headers=auth, timeout=10)
    assert bad.status_code == 422
    with connect(f"ws://{proc.address}/workers/ws", additional_headers=auth, open_timeout=10) as ws:
        ws.send(json.dumps({"action": "Register", "capabilities": {"id": "ws-1"}}))
        assert json.loads(ws.recv(timeout=10))["ok"] is True
        with grpc.insecure_channel(grpc_address) as channel:
            caps = to_proto(schema.validate({"id": "grpc-1"}, ref="test"))
            pb_grpc.WorkerRegistryStub(channel).Register(
                pb.RegisterRequest(capabilities=caps),
                metadata=[("authorization", f"Bearer {TOKEN}")],
                timeout=10,
            )
        broker.publish(fleet.queue, {"id": "amqp-1"})
        wait_until(lambda: {"rest-1", "ws-1", "grpc-1", "amqp-1"} <= workers(proc), timeout=30)
        yield


def workers(proc: Daemon) -> set[str]:
    response = proc.get("/workers")
    return {worker["id"] for worker in response.json()} if response.ok else set()


def test_dashboard_queries_return_series_and_alerts_follow_a_failing_registry(
    prometheus: Prometheus, rabbitmq: Broker, monitored: tuple[Daemon, Fleet, str]
):
    proc, fleet, grpc_address = monitored
    prometheus.scrape(proc.address)
    wait_until(lambda: prometheus.target_health(proc.address) == "up", timeout=30)
    with front_ends_used(proc, grpc_address, rabbitmq, fleet):
        normal_cycle(prometheus, proc)
        failing_registry(prometheus, proc, fleet)


def normal_cycle(prometheus: Prometheus, proc: Daemon) -> None:
    """Every panel's every query has series, /metrics is clean, no alert is pending."""
    missing: list[str] = []

    def every_panel_has_series() -> bool:
        missing[:] = [
            f"{title}: {expr}"
            for title, expr in panel_queries()
            if not prometheus.query(for_instance(expr, proc.address))
        ]
        return not missing

    try:
        wait_until(every_panel_has_series, timeout=60, step=1)
    except AssertionError:
        raise AssertionError("panels without series:\n" + "\n".join(missing)) from None
    entries = prometheus.query(
        f'sum by (source) (capsync_registry_entries{{instance="{proc.address}", registry="local"}})'
    )
    assert {s["metric"]["source"]: s["value"][1] for s in entries} == {
        "file": "9",
        "push": "3",
        "amqp": "1",
    }
    calls = prometheus.query(
        f'sum by (frontend) (capsync_push_requests_total{{instance="{proc.address}", '
        'operation="register", outcome="ok"})'
    )
    assert {s["metric"]["frontend"]: s["value"][1] for s in calls} == {
        "rest": "1",
        "websocket": "1",
        "grpc": "1",
        "amqp": "1",
    }
    # The rules' unit tests feed series by name: each of those names is a real one.
    for name in sorted(set(re.findall(r"\bcapsync_\w+", RULES.read_text()))):
        assert prometheus.query(f'{name}{{instance="{proc.address}"}}'), name
    checked = promtool("check", "metrics", stdin=proc.get("/metrics").text)
    assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip(), checked
    assert active(prometheus, proc.address) == set()


def failing_registry(prometheus: Prometheus, proc: Daemon, fleet: Fleet) -> None:
    """After a reload, a registry whose writer claim another host holds and a source
    that cannot list: their alerts go pending, the healthy registry raises none."""
    fleet.add_failures()
    proc.signal(signal.SIGHUP)
    proc.wait_for(lambda line: "event=reloaded" in line)
    expected = {
        ("CapsyncRegistryFailing", "claimed"),
        ("CapsyncWriterClaimHeldElsewhere", "claimed"),
        ("CapsyncSourceFrozen", "gone"),
        ("CapsyncNotReady", ""),
        ("CapsyncCyclesFailing", ""),
    }
    seen: set[tuple[str, str]] = set()

    def expected_pending() -> bool:
        seen.clear()
        seen.update(active(prometheus, proc.address, "pending"))
        return expected <= seen

    try:
        wait_until(expected_pending, timeout=60, step=1)
    except AssertionError:
        log = "\n".join(proc.lines[-10:])
        raise AssertionError(f"pending: {sorted(seen)}; daemon log:\n{log}") from None
    assert seen == expected  # each waits out its "for" (a minute or more) before it fires
    up = prometheus.query(f'capsync_registry_up{{instance="{proc.address}"}}')
    assert {s["metric"]["registry"]: s["value"][1] for s in up} == {"local": "1", "claimed": "0"}
