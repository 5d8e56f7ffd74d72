"""The contract of every way in (issue 21): REST, WebSocket text and binary frames, gRPC
unary and Session, the RabbitMQ queue and `capsync publish` meet one corpus of hostile
inputs and one set of lease scenarios, and each answers the same: refused with the field
path and nothing stored, or stored exactly; the daemon and a bystander connection
unaffected. One daemon (push and amqp sources, gRPC on, an API token, a 2 s grace) serves
the whole module; every case uses worker ids of its own."""

from __future__ import annotations

import json
import queue
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from websockets.sync.client import ClientConnection, connect

from daemon.front_ends import FRONT_ENDS
from discovery import schema
from discovery.inbox import Registration, SqliteInbox
from discovery.proto import registry_pb2 as pb
from discovery.proto import registry_pb2_grpc as pb_grpc
from tests.conftest import run_cli
from tests.daemon_process import Daemon, wait_until
from tests.push_daemon import TOKEN
from tests.rabbitmq import Broker

GRACE = 2.0
MAX_TTL = 86400
# Each way in, and where it lives: a front end of the daemon (FRONT_ENDS), or the amqp
# source with `capsync publish` feeding it.
PLACES = {
    "http": ("rest", "websocket-text", "websocket-binary"),
    "grpc": ("grpc-unary", "grpc-session"),
    "amqp-source": ("amqp", "publish"),
}
WAYS = [way for ways in PLACES.values() for way in ways]
ENVELOPE = {"websocket-text", "websocket-binary", "grpc-session"}
CONNECTION = ENVELOPE
BYTES = {"rest", "websocket-text", "websocket-binary", "amqp", "publish"}
ABSENT = object()


@dataclass
class Outcome:
    """What the caller saw: stored, or refused with this text (field paths in it)."""

    stored: bool
    text: str


@dataclass(frozen=True)
class Case:
    """One hostile input. ``body`` is a declaration (``{id}`` stands for the case's worker
    id) or raw bytes (only the ways that carry bytes can send it); ``field`` is the path
    the refusal names ("" for input that is not one JSON value)."""

    name: str
    body: dict[str, Any] | bytes
    field: str
    ttl: Any = ABSENT
    ways: frozenset[str] = frozenset(WAYS)


def deep(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


CORPUS = [
    Case("nul-in-id", {"id": "{id}\x00x"}, "id"),
    Case("nul-in-metadata", {"id": "{id}", "metadata": {"k": "a\x00b"}}, "metadata.k"),
    Case(
        "nul-in-tool-name",
        {"id": "{id}", "fuzzing_tools": [{"tool_name": "afl\x00"}]},
        "fuzzing_tools[0].tool_name",
    ),
    Case(
        "lone-surrogate",
        b'{"id": "{id}", "metadata": {"k": "a\\udc00"}}',
        "metadata.k",
        ways=frozenset(BYTES),
    ),
    Case(
        "too-deep",
        {"id": "{id}", "metadata": {"k": deep(40)}},
        "metadata.k",
        ways=frozenset(BYTES),
    ),
    Case(
        "far-too-deep",
        b'{"id": "{id}", "metadata": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
        "",
        ways=frozenset(BYTES),
    ),
    Case("duplicate-key", b'{"id": "{id}", "id": "{id}-2"}', "", ways=frozenset(BYTES)),
    Case(
        "invalid-utf8",
        b'{"id": "{id}", "metadata": {"k": "\xff\xfe"}}',
        "",
        ways=frozenset(BYTES - {"websocket-text"}),
    ),
    Case("nan", b'{"id": "{id}", "metadata": {"k": NaN}}', "", ways=frozenset(BYTES)),
    Case(
        "unknown-field",
        {"id": "{id}", "static_analysis_tool": []},
        "static_analysis_tool",
        ways=frozenset(BYTES),
    ),
    Case("ttl-boolean", {"id": "{id}"}, "ttl", ttl=True, ways=frozenset(BYTES)),
    Case("ttl-string", {"id": "{id}"}, "ttl", ttl="5", ways=frozenset(BYTES)),
    Case("ttl-zero", {"id": "{id}"}, "ttl", ttl=0),
    Case("ttl-negative", {"id": "{id}"}, "ttl", ttl=-5),
    Case("ttl-over-max", {"id": "{id}"}, "ttl", ttl=MAX_TTL + 1),
]


class Ways:
    """Every way in, as a worker (or a hostile peer) would use it."""

    def __init__(self, proc: Daemon, broker: Broker, queue_name: str, state: Path) -> None:
        self.proc, self.broker, self.queue, self.state = proc, broker, queue_name, state
        self.grpc_address = (
            proc.wait_for(lambda line: "event=started" in line).split("grpc=")[1].split()[0]
        )
        self.channel = grpc.insecure_channel(self.grpc_address)
        self.stub = pb_grpc.WorkerRegistryStub(self.channel)
        self._conn: dict[str, Any] = {}

    # What the daemon holds

    def held(self, worker_id: str) -> Registration | None:
        for name in ("inbox.db", "amqp-inbox.db"):
            inbox = SqliteInbox(self.state / name)
            try:
                if found := inbox.get(worker_id):
                    return found
            finally:
                inbox.close()
        return None

    # Connections (WebSocket, gRPC Session): one per way while ``connected`` lasts

    @contextmanager
    def connected(self, way: str) -> Iterator[None]:
        if way.startswith("websocket"):
            with self.websocket() as ws:
                self._conn[way] = ws
                try:
                    yield
                finally:
                    del self._conn[way]
        elif way == "grpc-session":
            requests_q: queue.Queue[pb.CapabilityUpdate | None] = queue.Queue()
            answers = self.stub.Session(
                iter(requests_q.get, None), metadata=[("authorization", f"Bearer {TOKEN}")]
            )
            self._conn[way] = (requests_q, answers)
            try:
                yield
            finally:
                del self._conn[way]
                requests_q.put(None)
                for _ in answers:
                    pass
        else:
            yield

    def websocket(self) -> ClientConnection:
        return connect(
            f"ws://{self.proc.address}/workers/ws",
            additional_headers={"Authorization": f"Bearer {TOKEN}"},
            open_timeout=10,
        )

    # Sending

    def send(self, way: str, body: dict[str, Any] | bytes, ttl: Any = ABSENT) -> Outcome:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        if way == "rest":
            params = {} if ttl is ABSENT else {"ttl": json.dumps(ttl)}
            response = requests.post(
                f"http://{self.proc.address}/workers/register",
                data=raw,
                params=params,
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
                timeout=10,
            )
            assert response.status_code in (200, 400, 413, 422), response.text
            return Outcome(response.status_code == 200, response.text)
        if way.startswith("websocket"):
            envelope = b'{"action": "Register", "capabilities": ' + raw
            envelope += b"}" if ttl is ABSENT else b', "ttl": ' + json.dumps(ttl).encode() + b"}"
            ws: ClientConnection = self._conn[way]
            ws.send(envelope.decode() if way == "websocket-text" else envelope)
            answer = json.loads(ws.recv(timeout=10))
            return Outcome(answer["ok"], json.dumps(answer))
        if way == "grpc-unary":
            request = pb.RegisterRequest(capabilities=_proto(body))
            if ttl is not ABSENT:
                request.ttl = ttl
            try:
                self.stub.Register(
                    request, metadata=[("authorization", f"Bearer {TOKEN}")], timeout=10
                )
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc
                return Outcome(False, _violations(exc))
            return Outcome(True, "")
        if way == "grpc-session":
            requests_q, answers = self._conn[way]
            update = pb.CapabilityUpdate(
                action=pb.CapabilityUpdate.REGISTER, capabilities=_proto(body)
            )
            if ttl is not ABSENT:
                update.ttl = ttl
            requests_q.put(update)
            reply = next(answers)
            return Outcome(reply.ok, json_format.MessageToJson(reply))
        if way == "amqp":
            headers = None if ttl is ABSENT else {"ttl": ttl}
            self.broker.publish(self.queue, raw, headers=headers)
            return self._consumed(raw)
        assert way == "publish"
        args = ["publish", "-", "--amqp", self.broker.url, "--queue", self.queue]
        if ttl is not ABSENT:
            args += ["--ttl", json.dumps(ttl)]
        result = run_cli(*args, input=raw)
        assert "Traceback" not in result.stderr, result.stderr
        if result.returncode != 0:
            return Outcome(False, result.stderr)
        return self._consumed(raw, exact=False)

    def _consumed(self, raw: bytes, *, exact: bool = True) -> Outcome:
        """The consumer's verdict on a message: stored in its inbox, or dead-lettered
        with the reason."""
        found = re.search(rb'"id": "([^"\\]+)"', raw)
        worker_id = found.group(1).decode() if found else None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if worker_id and self.held(worker_id):
                return Outcome(True, "")
            if self.broker.depth(f"{self.queue}.invalid"):
                [(props, body)] = self.broker.take(f"{self.queue}.invalid", 1)
                assert body == raw or not exact  # unchanged (publish sends its own form)
                return Outcome(False, props.headers["x-capsync-reason"])
            time.sleep(0.05)
        raise AssertionError("the consumer neither stored nor dead-lettered the message")


def _proto(body: dict[str, Any] | bytes) -> pb.WorkerCapabilitiesProto:
    assert isinstance(body, dict)
    return json_format.ParseDict(body, pb.WorkerCapabilitiesProto())


def _violations(exc: grpc.RpcError) -> str:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None
    fields = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        detail.Unpack(bad)
        fields += [f"{v.field}: {v.description}" for v in bad.field_violations]
    return "\n".join(fields)


def expected_field(way: str, field: str) -> str:
    if field == "ttl":
        # `capsync publish` names its flag (--ttl) or, past the consumer's max_ttl, the
        # consumer names the header (ttl).
        return "query.ttl" if way == "rest" else "ttl"
    if way in ENVELOPE and field:
        return f"capabilities.{field}"
    return field


def with_id(body: dict[str, Any] | bytes, worker_id: str) -> dict[str, Any] | bytes:
    if isinstance(body, bytes):
        return body.replace(b"{id}", worker_id.encode())
    return json.loads(json.dumps(body).replace("{id}", worker_id))


@pytest.fixture(scope="module")
def ways(rabbitmq: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ways]:
    state = tmp_path_factory.mktemp("intake")
    (state / "api-token").write_text(TOKEN + "\n")
    queue_name = f"worker.capabilities.{uuid.uuid4().hex[:8]}"
    config = state / "capsync.toml"
    config.write_text(
        f"""
[api]
token_file = "{state / "api-token"}"
grace = "{GRACE:g}s"

[grpc]
listen = "127.0.0.1:0"

[[sources]]
type = "push"
path = "{state / "inbox.db"}"

[[sources]]
type = "amqp"
url = "{rabbitmq.url}"
queue = "{queue_name}"
path = "{state / "amqp-inbox.db"}"
"""
    )
    proc = Daemon(
        ["--config", str(config), "--registry", f"sqlite:{state / 'registry.db'}"]
    ).started()
    try:
        wait_until(
            lambda: proc.status()["amqp"]["consumers"]["amqp"]["state"] == "consuming",
            timeout=30,
        )
        out = Ways(proc, rabbitmq, queue_name, state)
        yield out
        out.channel.close()
    finally:
        assert proc.stop() == 0


@pytest.fixture(scope="module")
def bystander(ways: Ways) -> Iterator[ClientConnection]:
    """A WebSocket that stays open through the module: whatever the others send, it is
    served."""
    with ways.websocket() as ws:
        yield ws


def test_every_front_end_in_the_table_has_its_place():
    assert set(FRONT_ENDS) == set(PLACES) - {"amqp-source"}
    assert sorted(WAYS) == sorted(set(WAYS))


# Every case on every way that can carry it (a gRPC client cannot send a boolean ttl or
# bytes that are not JSON: its type system refuses them before they leave).
HOSTILE = [(way, case) for case in CORPUS for way in WAYS if way in case.ways]


def test_every_way_meets_the_corpus():
    assert {way for way, _ in HOSTILE} == set(WAYS)


@pytest.mark.parametrize(
    ("way", "case"), HOSTILE, ids=[f"{way}-{case.name}" for way, case in HOSTILE]
)
def test_hostile_input_is_refused_with_its_field_path(
    ways: Ways, bystander: ClientConnection, way: str, case: Case
) -> None:
    worker_id = f"h-{uuid.uuid4().hex[:10]}"
    with ways.connected(way):
        outcome = ways.send(way, with_id(case.body, worker_id), case.ttl)
    assert not outcome.stored
    field = expected_field(way, case.field)
    if field:
        assert f"{field}" in outcome.text, outcome.text
    else:
        assert any(word in outcome.text for word in ("malformed JSON", "UTF-8", "too large")), (
            outcome.text
        )
    assert ways.held(worker_id) is None and ways.held(f"{worker_id}-2") is None
    # The daemon, and a connection that sent nothing wrong, carry on.
    bystander.send(json.dumps({"action": "Register", "capabilities": {"id": "bystander"}}))
    assert json.loads(bystander.recv(timeout=10))["ok"] is True
    assert ways.proc.get("/healthz").status_code == 200


@pytest.mark.parametrize("way", WAYS)
def test_a_valid_registration_is_stored_exactly(ways: Ways, way: str) -> None:
    worker_id = f"ok-{uuid.uuid4().hex[:10]}"
    declaration = {
        "id": worker_id,
        "fuzzing_tools": [{"tool_name": "afl", "required": True, "alternatives": ["libfuzzer"]}],
        "flags": {"gpu": True},
        "metadata": {"team": "sécurité ✓"},
    }
    with ways.connected(way):
        assert ways.send(way, declaration).stored
    held = ways.held(worker_id)
    assert held is not None
    assert schema.validate(held.body, ref="held") == schema.validate(declaration, ref="sent")
    shown = wait_until(
        lambda: (r := ways.proc.get(f"/workers/{worker_id}")).status_code == 200 and r.json()
    )
    assert shown["declaration"]["metadata"] == {"team": "sécurité ✓"}


@pytest.mark.parametrize("way", WAYS)
def test_an_explicit_ttl_outlives_the_connection(ways: Ways, way: str) -> None:
    worker_id = f"ttl-{uuid.uuid4().hex[:10]}"
    before = time.time()
    with ways.connected(way):
        assert ways.send(way, {"id": worker_id}, 600).stored
    after = time.time()
    held = ways.held(worker_id)
    assert held is not None and held.conn is None
    assert held.expires is not None and before + 600 <= held.expires <= after + 600
    if way in CONNECTION:
        time.sleep(GRACE * 1.5)  # past the grace period after the connection ended
        still = ways.held(worker_id)
        assert still is not None and still.expires == held.expires


@pytest.mark.parametrize("way", WAYS)
def test_a_renewal_never_shortens_a_lease(ways: Ways, way: str) -> None:
    worker_id = f"renew-{uuid.uuid4().hex[:10]}"
    with ways.connected(way):
        assert ways.send(way, {"id": worker_id}, 3600).stored
        first = ways.held(worker_id)
        assert first is not None and first.expires is not None
        assert ways.send(way, {"id": worker_id, "flags": {"renewed": True}}, 60).stored
        if way in ("amqp", "publish"):
            wait_until(lambda: (r := ways.held(worker_id)) and r.body.get("flags"))
    renewed = ways.held(worker_id)
    assert renewed is not None and renewed.body["flags"] == {"renewed": True}
    assert renewed.expires == first.expires


@pytest.mark.parametrize("way", WAYS)
def test_without_a_ttl_only_a_connection_bounds_the_registration(ways: Ways, way: str) -> None:
    worker_id = f"bound-{uuid.uuid4().hex[:10]}"
    with ways.connected(way):
        assert ways.send(way, {"id": worker_id}).stored
        held = ways.held(worker_id)
        assert held is not None
        wait_until(lambda: ways.proc.get(f"/workers/{worker_id}").status_code == 200)
    if way not in CONNECTION:
        assert held.expires is None and held.conn is None  # stays until unregistered
        return
    assert held.conn is not None and held.expires is not None
    # The connection ended: the worker leaves the registry once the grace period passed.
    wait_until(lambda: ways.proc.get(f"/workers/{worker_id}").status_code == 404, timeout=20)
