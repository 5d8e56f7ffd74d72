"""RabbitMQ against a real broker (tests/rabbitmq.py) and the Consul double: the seed's
queue consumed into the registry, poison messages into the dead-letter queue, a broker
restarted mid-stream, change events on the topic exchange (through an outage), and
`capsync publish`. What a worker, a subscriber and an operator would notice."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from daemon.amqp_events import EventPublisher, Outbox
from daemon.amqp_events_settings import AmqpEventsSettings
from daemon.events import EventBus
from discovery.codec import Entry
from discovery.sources.amqp import Invalid, decode
from tests.conftest import SEED_CRD_SPEC, SEED_LABEL, run_cli
from tests.consul_target import ConsulTarget, needs_double
from tests.daemon_process import Daemon, wait_until
from tests.push_daemon import TOKEN
from tests.rabbitmq import Broker, free_port

SEED = json.loads(SEED_LABEL)  # the seed's own declaration: {"id": "rust-worker", ...}


def toml(table: dict[str, Any]) -> str:
    return "\n".join(f"{key} = {json.dumps(value)}" for key, value in table.items())


def start(
    consul: ConsulTarget,
    tmp_path: Path,
    broker: Broker,
    *,
    amqp: dict[str, Any] | None,
    events: dict[str, Any] | None = None,
    push: bool = False,
) -> Daemon:
    """`capsync run` with an amqp source (``amqp``: its settings beyond the defaults), a push
    source, and the event publisher (``events``)."""
    parts = []
    if push:
        parts.append(f'[[sources]]\ntype = "push"\npath = "{tmp_path / "inbox.db"}"')
        (tmp_path / "api-token").write_text(TOKEN)
        parts.append(f'[api]\ntoken_file = "{tmp_path / "api-token"}"')
    if amqp is not None:
        parts.append(
            "[[sources]]\n"
            + toml(
                {"type": "amqp", "url": broker.url, "path": str(tmp_path / "amqp-inbox.db"), **amqp}
            )
        )
    if events is not None:
        parts.append(
            "[amqp_events]\n"
            + toml(
                {
                    "enabled": True,
                    "url": broker.url,
                    "outbox": str(tmp_path / "outbox.db"),
                    **events,
                }
            )
        )
    config = tmp_path / "capsync.toml"
    config.write_text("\n\n".join(parts) + "\n")
    return Daemon(
        [
            "--config",
            str(config),
            "--owner",
            consul.owner,
            "--service",
            consul.service,
            "--interval",
            "300s",
        ],
        env=consul.env(),
    ).started()


def queue_name() -> str:
    return f"worker.capabilities.{uuid.uuid4().hex[:8]}"


def consumer(proc: Daemon, name: str = "amqp") -> dict[str, Any]:
    return dict(proc.status()["amqp"]["consumers"][name])


def test_seed_messages_register_update_and_unregister(
    rabbitmq: Broker, consul: ConsulTarget, tmp_path: Path
):
    queue = queue_name()
    proc = start(consul, tmp_path, rabbitmq, amqp={"queue": queue})
    try:
        wait_until(lambda: consumer(proc)["state"] == "consuming", timeout=20)
        rabbitmq.publish(queue, SEED)  # exactly what the seed's publish_capabilities sends
        service = wait_until(lambda: consul.services().get("rust-worker"))
        assert service["ServiceTags"] == ["clippy"]
        assert service["ServiceMeta"]["capsync-source"] == "amqp"
        assert service["ServiceMeta"]["capsync-ref"] == "amqp/rust-worker"
        # An update (camelCase, as the CRD writes it) and a second worker by envelope.
        rabbitmq.publish(
            queue,
            SEED_CRD_SPEC | {"id": "rust-worker"},
            {"action": "Register", "capabilities": {"id": "py-1"}, "ttl": 3600},
        )
        wait_until(
            lambda: (
                sorted(consul.services().get("rust-worker", {}).get("ServiceTags", []))
                == ["cargo-audit", "cargo-fmt", "clippy", "rustfmt"]
            )
        )
        wait_until(lambda: "py-1" in consul.services())
        rabbitmq.publish(queue, {"action": "Unregister", "capabilities": {"id": "RUST-WORKER"}})
        wait_until(lambda: "rust-worker" not in consul.services())
        stats = consumer(proc)
        assert (stats["consumed"], stats["rejected"], stats["queue"]) == (4, 0, queue)
        assert rabbitmq.depth(queue) == 0  # every message acknowledged
        metrics = proc.get("/metrics").text
        assert 'capsync_amqp_messages_total{result="consumed",source="amqp"} 4.0' in metrics
        assert 'capsync_amqp_consumer_up{source="amqp"} 1.0' in metrics
    finally:
        assert proc.stop() == 0


def test_poison_messages_go_to_the_dead_letter_queue_once(
    rabbitmq: Broker, consul: ConsulTarget, tmp_path: Path
):
    queue = queue_name()
    # The queue exists already, declared by someone else without dead-letter arguments,
    # and capsync is told to use it as it is.
    with rabbitmq.channel() as channel:
        channel.queue_declare(queue, durable=True)
    proc = start(consul, tmp_path, rabbitmq, amqp={"queue": queue, "passive": True})
    try:
        wait_until(lambda: consumer(proc)["state"] == "consuming", timeout=20)
        poison = [
            b"{not json",
            b"x" * 70_000,
            json.dumps([SEED]).encode(),
            json.dumps({"id": "bad", "static_analysis_tool": []}).encode(),
            json.dumps({"action": "Explode", "capabilities": {}}).encode(),
            json.dumps({"action": "Unregister", "capabilities": {}}).encode(),
            json.dumps({"id": "leased"}).encode(),
        ]
        rabbitmq.publish(queue, *poison[:-1])
        rabbitmq.publish(queue, poison[-1], headers={"ttl": -5})
        rabbitmq.publish(queue, {"id": "after-the-poison"})
        wait_until(lambda: "after-the-poison" in consul.services())  # the consumer goes on
        dead = rabbitmq.take(f"{queue}.invalid", len(poison))
        assert [body for _, body in dead] == poison  # each once, in order, unchanged
        reasons = [props.headers["x-capsync-reason"] for props, _ in dead]
        assert reasons[0].startswith("malformed JSON")
        assert reasons[1].startswith("too large: 70000 bytes")
        assert "static_analysis_tool" in reasons[3]
        assert reasons[4].startswith("invalid message: action")
        assert "capabilities.id" in reasons[5]
        assert reasons[6].startswith("invalid ttl: ttl:")
        assert all(props.headers["x-capsync-queue"] == queue for props, _ in dead)
        assert dead[6][0].headers["ttl"] == -5  # the message's own headers are kept
        stats = consumer(proc)
        assert (stats["rejected"], stats["consumed"]) == (len(poison), 1)
        assert rabbitmq.depth(queue) == 0 and rabbitmq.depth(f"{queue}.invalid") == 0
        assert set(consul.services()) == {"after-the-poison"}
    finally:
        assert proc.stop() == 0


def test_a_queue_declared_elsewhere_with_other_arguments_is_named_with_the_fix(
    rabbitmq: Broker, consul: ConsulTarget, tmp_path: Path
):
    queue = queue_name()
    with rabbitmq.channel() as channel:
        channel.queue_declare(queue, durable=True, arguments={"x-max-length": 10})
    proc = start(consul, tmp_path, rabbitmq, amqp={"queue": queue})
    try:
        line = proc.wait_for(lambda line: "event=amqp_consumer_down" in line, 20)
        assert "PRECONDITION_FAILED" in line and "'x-max-length'" in line, line
        assert "passive = true" in line
    finally:
        assert proc.stop() == 0


def test_broker_restarted_mid_stream_loses_nothing(
    rabbitmq: Broker, consul: ConsulTarget, tmp_path: Path
):
    needs_double(consul)
    queue = queue_name()
    proc = start(consul, tmp_path, rabbitmq, amqp={"queue": queue, "prefetch": 20})
    try:
        wait_until(lambda: consumer(proc)["state"] == "consuming", timeout=20)
        first = [{"id": f"w-{i}", "metadata": {"n": str(i)}} for i in range(1500)]
        sender = threading.Thread(target=rabbitmq.publish, args=(queue, *first))
        sender.start()
        sender.join()
        rabbitmq.restart()  # while the consumer is working through the queue
        wait_until(lambda: consumer(proc)["state"] == "consuming", timeout=60)
        rabbitmq.publish(
            queue, *[{"id": f"w-{i}", "metadata": {"n": str(i)}} for i in range(1500, 1600)]
        )
        wait_until(lambda: len(consul.services()) == 1600, timeout=60)
        services = consul.services()
        assert all(services[f"w-{i}"]["ServiceMeta"]["n"] == str(i) for i in range(1600))
        assert rabbitmq.depth(queue) == 0
        assert any("amqp_consumer_down" in line for line in proc.lines)
        # Redelivered or republished, the same declaration has no second effect.
        before, consumed = consul.writes(), consumer(proc)["consumed"]
        rabbitmq.publish(queue, *first[:50], {"id": "sentinel"})
        wait_until(lambda: "sentinel" in consul.services())
        assert consumer(proc)["consumed"] == consumed + 51
        assert consul.writes() == before + 1
    finally:
        assert proc.stop() == 0


def test_a_bad_message_amid_a_batch_is_dead_lettered_alone(
    rabbitmq: Broker, consul: ConsulTarget, tmp_path: Path
):
    """Good messages on both sides of a bad one, in one prefetch window: every good one
    lands, the bad one alone goes to the dead-letter queue with its reason."""
    queue = queue_name()
    proc = start(consul, tmp_path, rabbitmq, amqp={"queue": queue, "prefetch": 100})
    try:
        wait_until(lambda: consumer(proc)["state"] == "consuming", timeout=20)
        good = [{"id": f"w-{i}"} for i in range(150)]
        bad = json.dumps({"id": "bad", "static_analysis_tool": []}).encode()
        rabbitmq.publish(queue, *good[:75], bad, *good[75:])
        wait_until(lambda: len(consul.services()) == 150, timeout=60)
        [(props, body)] = rabbitmq.take(f"{queue}.invalid", 1)
        assert body == bad and "static_analysis_tool" in props.headers["x-capsync-reason"]
        stats = consumer(proc)
        assert (stats["consumed"], stats["rejected"]) == (150, 1)
        assert rabbitmq.depth(queue) == 0
    finally:
        assert proc.stop() == 0


def test_a_daemon_killed_mid_stream_loses_nothing(
    rabbitmq: Broker, consul: ConsulTarget, tmp_path: Path
):
    """SIGKILL once the consumer has stored its first batch of a long stream: what it
    had not stored was not acknowledged, so the broker hands it to the next daemon;
    what it stored is in its inbox. Every declaration ends up in the registry."""
    queue = queue_name()
    settings = {"queue": queue, "prefetch": 20}
    proc = start(consul, tmp_path, rabbitmq, amqp=settings)
    try:
        wait_until(lambda: consumer(proc)["state"] == "consuming", timeout=20)
        sent = [{"id": f"w-{i}", "metadata": {"n": str(i)}} for i in range(3000)]
        rabbitmq.publish(queue, *sent)
        wait_until(lambda: consumer(proc)["consumed"] > 0, timeout=30, step=0.01)
    finally:
        proc.kill()
    proc = start(consul, tmp_path, rabbitmq, amqp=settings)
    try:
        wait_until(lambda: len(consul.services()) == 3000, timeout=180)
        services = consul.services()
        assert all(services[f"w-{i}"]["ServiceMeta"]["n"] == str(i) for i in range(3000))
        assert rabbitmq.depth(queue) == 0
    finally:
        assert proc.stop() == 0


def test_change_events_in_order_and_after_an_outage(
    rabbitmq: Broker, consul: ConsulTarget, tmp_path: Path
):
    exchange = f"events-{uuid.uuid4().hex[:8]}"
    events = f"{exchange}.subscriber"
    with rabbitmq.channel() as channel:
        channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        channel.queue_declare(events, durable=True)
        channel.queue_bind(events, exchange, routing_key="*.worker")
    proc = start(consul, tmp_path, rabbitmq, amqp=None, push=True, events={"exchange": exchange})
    headers = {"Authorization": f"Bearer {TOKEN}"}
    register = f"http://{proc.address}/workers/register"
    try:
        for worker in ("a", "b"):
            assert requests.post(register, json={"id": worker}, headers=headers, timeout=10).ok
            wait_until(lambda w=worker: w in consul.services())
        got = rabbitmq.take(events, 2)
        bodies = [json.loads(body) for _, body in got]
        assert [(b["action"], b["id"], b["type"]) for b in bodies] == [
            ("created", "a", "event"),
            ("created", "b", "event"),
        ]
        assert bodies[1]["sequence"] == bodies[0]["sequence"] + 1
        assert bodies[0]["declaration"]["id"] == "a" and bodies[0]["source"] == "push"
        assert all(props.delivery_mode == 2 for props, _ in got)  # persistent

        rabbitmq.stop()  # the broker is away while the registry changes
        assert requests.post(register, json={"id": "c"}, headers=headers, timeout=10).ok
        wait_until(lambda: "c" in consul.services())
        assert requests.delete(f"http://{proc.address}/workers/a", headers=headers, timeout=10).ok
        wait_until(lambda: "a" not in consul.services())
        publisher = wait_until(
            lambda: (p := proc.status()["amqp"]["publisher"])["outbox"] == 2 and p
        )
        assert publisher["state"] == "disconnected"
        rabbitmq.start()
        later = [json.loads(body) for _, body in rabbitmq.take(events, 2, timeout=60)]
        assert [(b["action"], b["id"]) for b in later] == [("created", "c"), ("deleted", "a")]
        assert [b["sequence"] for b in later] == [
            bodies[1]["sequence"] + 1,
            bodies[1]["sequence"] + 2,
        ]
        assert {b["stream"] for b in bodies + later} == {bodies[0]["stream"]}
        status = wait_until(lambda: (p := proc.status()["amqp"]["publisher"])["outbox"] == 0 and p)
        assert (status["published"], status["dropped"], status["state"]) == (4, 0, "connected")
    finally:
        assert proc.stop() == 0


def test_capsync_publish_end_to_end(rabbitmq: Broker, consul: ConsulTarget, tmp_path: Path):
    queue = queue_name()
    proc = start(consul, tmp_path, rabbitmq, amqp={"queue": queue})
    try:
        wait_until(lambda: consumer(proc)["state"] == "consuming", timeout=20)
        good = tmp_path / "workers"
        good.mkdir()
        (good / "rust.json").write_text(json.dumps(SEED_CRD_SPEC))
        (good / "py.yaml").write_text(
            "id: py-worker\ntest_framework_tools:\n  - tool_name: pytest\n"
        )
        secret = tmp_path / "password"
        secret.write_text("guest\n")
        url = rabbitmq.url.replace("guest:guest@", "guest@")  # the password from the file
        done = run_cli(  # the URL from $CAPSYNC_AMQP_URL, as the README says
            "publish",
            str(good),
            "--queue",
            queue,
            "--password-file",
            str(secret),
            env={"CAPSYNC_AMQP_URL": url},
        )
        assert done.returncode == 0, done.stderr
        assert sorted(done.stdout.split("\n")[:-1]) == [
            "published py-worker",
            "published rust-worker-1",
        ]
        wait_until(lambda: {"py-worker", "rust-worker-1"} <= set(consul.services()))
        assert sorted(consul.services()["rust-worker-1"]["ServiceTags"]) == [
            "cargo-audit",
            "cargo-fmt",
            "clippy",
            "rustfmt",
        ]

        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps([{"id": "fine"}, {"id": "broken", "flags": {"x": "yes"}}]))
        refused = run_cli("publish", str(bad), "--amqp", rabbitmq.url, "--queue", queue)
        assert refused.returncode == 1 and "flags.x" in refused.stderr
        assert "nothing published" in refused.stderr and refused.stdout == ""
        nowhere = run_cli(
            "publish",
            str(good / "rust.json"),
            "--amqp",
            rabbitmq.url,
            "--queue",
            f"{queue}.missing",
        )
        assert nowhere.returncode == 1 and "no queue" in nowhere.stderr
        wrong = run_cli(
            "publish",
            str(good / "rust.json"),
            "--amqp",
            rabbitmq.url.replace("guest:guest", "guest:hunter2-secret"),
            "--queue",
            queue,
        )
        assert wrong.returncode == 1 and "hunter2-secret" not in wrong.stderr + wrong.stdout
        assert "guest:***@" in wrong.stderr
        assert run_cli("publish", str(bad)).returncode == 2  # no --amqp
        assert consumer(proc)["rejected"] == 0
    finally:
        assert proc.stop() == 0


def test_wrong_password_is_reported_never_logged(
    rabbitmq: Broker, consul: ConsulTarget, tmp_path: Path
):
    secret = "p4ss-never-in-logs"
    url = rabbitmq.url.replace("guest:guest", f"guest:{secret}")
    config = tmp_path / "check.toml"
    config.write_text(f'[[sources]]\ntype = "amqp"\nurl = "{url}"\n')
    shown = run_cli("config", "check", str(config))
    assert shown.returncode == 0 and secret not in shown.stdout
    assert "guest:***@127.0.0.1" in shown.stdout
    proc = start(consul, tmp_path, rabbitmq, amqp={"url": url})
    try:
        down = wait_until(
            lambda: (c := consumer(proc))["state"] == "disconnected" and c, timeout=20
        )
        assert down["last_error"]
        proc.wait_for(lambda line: "amqp_consumer_down" in line)
    finally:
        assert proc.stop() == 0
    assert secret not in "\n".join(proc.lines)
    assert secret not in json.dumps(down)


@pytest.mark.parametrize(
    ("body", "headers", "reason"),
    [
        (b"\xff\xfe", None, "malformed JSON"),
        (b'"just a string"', None, "invalid declaration"),
        (b'{"id": "x", "flags": {"a": 1}}', None, "flags.a"),
        (b'{"action": "Register", "capabilities": {"id": "x"}, "extra": 1}', None, "extra"),
        (b'{"action": "Register", "capabilities": {"id": "x"}, "ttl": 0}', None, "ttl"),
        (b'{"action": "Unregister", "capabilities": {"id": 7}}', None, "capabilities.id"),
        (b'{"id": "x"}', {"ttl": True}, "ttl"),
        (b'{"id": "x"}', {"ttl": "60"}, "ttl"),
        (b'{"id": "x"}', {"ttl": 90_000}, "at most 86400"),
    ],
    ids=[
        "not-utf8",
        "not-an-object",
        "bad-flag",
        "envelope-extra",
        "envelope-ttl-0",
        "unregister-id-number",
        "ttl-bool",
        "ttl-string",
        "ttl-over-max",
    ],
)
def test_what_the_consumer_refuses(body: bytes, headers: dict[str, Any] | None, reason: str):
    with pytest.raises(Invalid, match=reason):
        decode(body, headers, max_ttl=86400.0)


def test_a_surprise_in_decoding_is_the_messages_fault():
    """Whatever goes wrong in decoding ends in the dead-letter queue (Invalid), never in
    an exception that would drop the connection and redeliver the message in a loop."""
    with pytest.raises(Invalid, match="could not be decoded: AttributeError"):
        decode(b'{"id": "x"}', ["not", "a", "table"], max_ttl=86400.0)  # type: ignore[arg-type]


def test_what_the_consumer_accepts():
    plain = decode(json.dumps(SEED).encode(), {"ttl": 60}, max_ttl=86400.0)
    assert (plain.action, plain.id, plain.body, plain.ttl) == ("register", "rust-worker", SEED, 60)
    # capsync publish sends a fractional lease as an AMQP decimal (a table has no float).
    decimal = decode(b'{"id": "w"}', {"ttl": Decimal("1.5")}, max_ttl=10)
    assert decimal.ttl == 1.5
    update = decode(b'{"action": "Update", "capabilities": {"id": "w"}}', None, max_ttl=10)
    assert (update.action, update.ttl) == ("update", None)
    gone = decode(b'{"action": "Unregister", "capabilities": {"id": "w"}}', None, max_ttl=10)
    assert (gone.action, gone.id, gone.body) == ("unregister", "w", None)


def test_a_full_outbox_drops_the_oldest_and_says_so(tmp_path: Path):
    """The broker is unreachable: events wait in the outbox, the oldest beyond its bound
    are dropped, counted and logged; what is kept survives a restart of the daemon."""
    bus = EventBus()
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F?connection_attempts=1"
    settings = AmqpEventsSettings(
        enabled=True, url=closed, outbox=tmp_path / "outbox.db", outbox_max=10
    )
    publisher = EventPublisher(bus, settings).start()
    try:
        bus.update("consul", {f"w-{i:02}": Entry(f"w-{i:02}", "worker", ()) for i in range(15)})
        wait_until(lambda: publisher.stats.dropped == 5 and publisher.stats.outbox == 10)
        wait_until(lambda: publisher.stats.state == "disconnected")
    finally:
        publisher.stop()
    outbox = Outbox(tmp_path / "outbox.db", 10)
    try:
        kept = [json.loads(body) for _, _, body in outbox.after(0, 100)]
    finally:
        outbox.close()
    assert [(e["id"], e["action"]) for e in kept] == [
        (f"w-{i:02}", "created") for i in range(5, 15)
    ]
    assert [e["sequence"] for e in kept] == list(range(6, 16))


def test_unreadable_secrets_and_tls_files_fail_at_start(tmp_path: Path):
    registry = f"sqlite:{tmp_path / 'registry.db'}"
    for table, expected in (
        (
            {
                "url": "amqp://capsync@127.0.0.1:1/%2F",
                "password_file": str(tmp_path / "missing-password"),
            },
            "missing-password",
        ),
        (
            {"url": "amqps://capsync:pw@127.0.0.1:1/%2F", "ca_file": str(tmp_path / "no-ca.pem")},
            "no-ca.pem",
        ),
        ({"url": "http://127.0.0.1:1/"}, "amqp:// or amqps://"),
    ):
        config = tmp_path / "capsync.toml"
        config.write_text(
            "[[sources]]\n"
            + toml({"type": "amqp", **table, "path": str(tmp_path / "inbox.db")})
            + "\n"
        )
        failed = run_cli("run", "--once", "--config", str(config), "--registry", registry)
        assert failed.returncode == 2 and expected in failed.stderr, failed.stderr
        assert "pw@" not in failed.stderr
    config = tmp_path / "events.toml"
    config.write_text(
        "[amqp_events]\n"
        + toml(
            {
                "enabled": True,
                "password_file": str(tmp_path / "no-events-password"),
                "outbox": str(tmp_path / "outbox.db"),
            }
        )
        + "\n"
    )
    failed = run_cli(
        "run",
        "--config",
        str(config),
        "--registry",
        registry,
        "--listen",
        "off",
        "--source",
        f"push:{tmp_path / 'push.db'}",
    )
    assert failed.returncode == 2 and "no-events-password" in failed.stderr, failed.stderr


def test_a_message_the_store_refuses_is_dead_lettered_once(
    rabbitmq: Broker, consul: ConsulTarget, tmp_path: Path
):
    """The inbox answers but refuses one registration (a trigger stands in for any
    store-side refusal): that message goes to the dead-letter queue with the reason, the
    others are stored, and nothing comes back in a loop."""
    queue = queue_name()
    proc = start(consul, tmp_path, rabbitmq, amqp={"queue": queue})
    try:
        wait_until(lambda: consumer(proc)["state"] == "consuming", timeout=20)
        db = sqlite3.connect(tmp_path / "amqp-inbox.db")
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON registrations WHEN NEW.key = 'poisoned' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the store'); END"
        )
        db.close()
        rabbitmq.publish(queue, {"id": "before"}, {"id": "poisoned"}, {"id": "healthy"})
        wait_until(lambda: {"before", "healthy"} <= set(consul.services()))
        [(props, body)] = rabbitmq.take(f"{queue}.invalid", 1)
        assert json.loads(body) == {"id": "poisoned"}
        assert "refused by the store" in props.headers["x-capsync-reason"]
        stats = consumer(proc)
        assert (stats["consumed"], stats["rejected"], stats["redelivered"]) == (2, 1, 0)
        assert stats["state"] == "consuming"
        assert rabbitmq.depth(queue) == 0
    finally:
        assert proc.stop() == 0
