"""What /metrics says about the inbox, its leases, the front ends' calls and the change
watchers: the series the lease, backlog and watcher alerts are written against."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from daemon.events import EventBus
from daemon.metrics import Metrics
from discovery import codec
from discovery.model import Capabilities
from tests.consul_target import ConsulTarget
from tests.daemon_process import wait_until
from tests.doubles.consul import ConsulDouble
from tests.push_daemon import PushDaemon


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


def test_leases_that_run_out_and_the_inbox_show_on_metrics(tmp_path: Path):
    with ConsulDouble() as double:
        target = ConsulTarget(double.address, double)
        proc = PushDaemon(target, tmp_path, "--interval", "300s").started()
        try:
            assert proc.register({"id": "short-1"}, ttl=1).ok
            assert proc.register({"id": "short-2"}, ttl=1).ok
            assert proc.register({"id": "forever"}).ok
            assert proc.register({"id": "bad id"}).status_code == 422
            assert proc.delete("nobody").status_code == 404
            wait_until(lambda: set(target.services()) == {"forever"}, timeout=15)
            text = proc.get("/metrics").text
        finally:
            assert proc.stop() == 0
    assert value(text, "capsync_lease_expiries_total", source="push") == 2
    assert value(text, "capsync_inbox_registrations", source="push", state="live") == 1
    assert value(text, "capsync_inbox_registrations", source="push", state="expired") == 2
    calls = {
        outcome: value(
            text,
            "capsync_push_requests_total",
            frontend="rest",
            operation=operation,
            outcome=outcome,
        )
        for operation, outcome in [("register", "ok"), ("register", "invalid")]
    }
    assert calls == {"ok": 3, "invalid": 1}
    not_found = value(
        text,
        "capsync_push_requests_total",
        frontend="rest",
        operation="unregister",
        outcome="not_found",
    )
    assert not_found == 1
    # Every outcome of a front end is there from its first call: error rates read 0.
    assert (
        value(
            text,
            "capsync_push_requests_total",
            frontend="rest",
            operation="register",
            outcome="unavailable",
        )
        == 0
    )
    assert (
        value(
            text,
            "capsync_push_request_duration_seconds_count",
            frontend="rest",
            operation="register",
        )
        == 4
    )


def entry(worker_id: str) -> codec.Entry:
    caps = Capabilities(id=worker_id)
    return codec.encode(
        caps, codec.Provenance(service="worker", owner="me", source="push", ref=worker_id)
    )


def test_a_watcher_that_falls_behind_is_counted_as_dropped():
    metrics = Metrics()
    bus = EventBus(queue=10)
    metrics.watch(amqp=dict, inboxes=dict, bus=bus)
    _, slow = bus.subscribe()
    _, reader = bus.subscribe()
    before = metrics.exposition().decode()
    assert value(before, "capsync_event_subscribers") == 2
    assert value(before, "capsync_event_subscribers_dropped_total") == 0
    bus.update("consul", {f"w{i}": entry(f"w{i}") for i in range(5)})
    reader.drain()
    bus.update("consul", {f"w{i}": entry(f"w{i}") for i in range(12)})
    after = metrics.exposition().decode()
    assert slow.dropped and not reader.dropped
    assert value(after, "capsync_event_subscribers") == 1
    assert value(after, "capsync_event_subscribers_dropped_total") == 1
