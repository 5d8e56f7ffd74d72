"""RabbitMQ figures, against a private broker (tests/rabbitmq.py) and the Consul double:

- N declarations published to ``worker.capabilities`` (persistent, without waiting for
  confirms, as the seed's publish_capabilities sends them) while a daemon with the amqp
  source consumes: the time until all are stored and acknowledged, until all are in
  Consul, and the write requests it took (coalesced by the cycle);
- the change-event publisher: N events through the outbox to the topic exchange, with
  publisher confirms, per second.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

from daemon.amqp_events import EventPublisher
from daemon.amqp_events_settings import AmqpEventsSettings
from daemon.events import EventBus
from discovery.codec import Entry
from tests.consul_target import ConsulTarget
from tests.daemon_process import Daemon, wait_until
from tests.doubles.consul import ConsulDouble
from tests.rabbitmq import Broker


def consume(broker: Broker, state: Path, count: int) -> dict[str, Any]:
    config = state / "capsync.toml"
    # A Consul of 1.14 or later: 128 operations a transaction, an entry's service and
    # its health check two of them.
    config.write_text(
        f'[consul]\nmax_txn_ops = 128\n[[sources]]\ntype = "amqp"\nurl = "{broker.url}"\n'
        f'path = "{state / "amqp-inbox.db"}"\n'
    )
    with ConsulDouble(max_txn_ops=128) as double:
        target = ConsulTarget(double.address, double, owner="bench")
        daemon = Daemon(
            ["--config", str(config), "--owner", "bench", "--interval", "300s"], env=target.env()
        ).started()
        try:
            wait_until(
                lambda: daemon.status()["amqp"]["consumers"]["amqp"]["state"] == "consuming", 30
            )
            double.reset_counts()
            bodies = [
                {
                    "id": f"queued-{i:05}",
                    "static_analysis_tools": [{"tool_name": "clippy"}],
                    "metadata": {"pool": f"pool-{i % 20}"},
                }
                for i in range(count)
            ]
            started = time.perf_counter()
            broker.publish("worker.capabilities", *bodies, confirm=False)
            published = time.perf_counter() - started
            wait_until(lambda: consumed(daemon) == count, 300, 0.1)
            stored = time.perf_counter() - started
            wait_until(lambda: registered(double, target) == count, 300, 0.1)
            visible = time.perf_counter() - started
            writes = double.count("PUT", "/v1/txn")
        finally:
            daemon.stop()
    return {
        "declarations": count,
        "all_published_s": round(published, 3),
        "all_stored_s": round(stored, 3),
        "all_in_consul_s": round(visible, 3),
        "write_requests": writes,
        "write_requests_if_one_batch": math.ceil(count / 64),
    }


def consumed(daemon: Daemon) -> int:
    """Messages the daemon's consumer stored and acknowledged (its /status)."""
    return int(daemon.status()["amqp"]["consumers"]["amqp"]["consumed"])


def registered(double: ConsulDouble, target: ConsulTarget) -> int:
    """Instances of our service on our node, counted in the double's own tables: asking
    over HTTP would render and decode the whole catalogue ten times a second in the
    double's process, which measured most of the wait it was meant to observe."""
    with double.store.lock:
        services = list(double.store.tables.services.values())
    node = target.node.lower()
    return sum(1 for s in services if s.name == target.service and s.node.lower() == node)


def publish_events(broker: Broker, state: Path, count: int) -> dict[str, Any]:
    bus = EventBus()
    settings = AmqpEventsSettings(
        enabled=True, url=broker.url, outbox=state / "outbox.db", outbox_max=count * 2
    )
    with broker.channel() as channel:  # a subscriber, so the events are routed and kept
        channel.exchange_declare(settings.exchange, exchange_type="topic", durable=True)
        channel.queue_declare("bench.events", durable=True)
        channel.queue_bind("bench.events", settings.exchange, routing_key="#")
    publisher = EventPublisher(bus, settings).start()
    try:
        started = time.perf_counter()
        bus.update(
            "consul", {f"w-{i:05}": Entry(f"w-{i:05}", "worker", ("clippy",)) for i in range(count)}
        )
        wait_until(lambda: publisher.stats.published == count, 600, 0.05)
        seconds = time.perf_counter() - started
    finally:
        publisher.stop()
    return {
        "events": count,
        "seconds": round(seconds, 3),
        "per_second": round(count / seconds),
        "in_queue": broker.depth("bench.events"),
    }


def run(count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="capsync-bench-amqp-") as tmp:
        root = Path(tmp)
        (root / "broker").mkdir()
        (root / "consume").mkdir()
        (root / "events").mkdir()
        broker = Broker(root / "broker")
        broker.start()
        try:
            return {
                "consume": consume(broker, root / "consume", count),
                "events": publish_events(broker, root / "events", count),
            }
        finally:
            broker.close()


def summary(figures: dict[str, Any]) -> list[str]:
    c, e = figures["consume"], figures["events"]
    return [
        f"  amqp: {c['declarations']} declarations published in {c['all_published_s']}s, "
        f"all stored and acknowledged after {c['all_stored_s']}s, "
        f"all in Consul after {c['all_in_consul_s']}s, {c['write_requests']} write "
        f"requests ({c['write_requests_if_one_batch']} if one batch)",
        f"  amqp events: {e['events']} published with confirms in {e['seconds']}s "
        f"({e['per_second']}/s)",
    ]
