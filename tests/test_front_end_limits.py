"""Listeners that idle peers cannot exhaust, and bytes that are not a message: the HTTP
header-read deadline, the gRPC cap on long-lived calls that need no token, and a gRPC
request that does not parse. Served in-process on free loopback ports, with real
sockets and real gRPC clients."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from daemon.api_settings import ApiSettings
from daemon.events import EventBus
from daemon.grpc_api import GrpcApi
from daemon.grpc_settings import GrpcSettings
from daemon.http_api import HttpApi
from daemon.metrics import Metrics
from daemon.registrar import Registrar, RegistrationContext
from daemon.status import DaemonState
from discovery.inbox import SqliteInbox
from discovery.proto import registry_pb2 as pb
from discovery.proto import registry_pb2_grpc as pb_grpc
from tests.daemon_process import wait_until

REGISTER = "/capsync.v1.WorkerRegistry/Register"
SESSION = "/capsync.v1.WorkerRegistry/Session"


@pytest.fixture
def registrar(tmp_path: Path) -> Iterator[Registrar]:
    inbox = SqliteInbox(tmp_path / "inbox.db")
    yield Registrar(
        RegistrationContext(
            inbox=lambda: inbox,
            registry=lambda: None,
            request=lambda reason: None,
            bus=EventBus(),
            settings=ApiSettings(header_timeout=1.0, max_connections=3),
        )
    )
    inbox.close()


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(30)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


def test_silent_and_slow_http_clients_are_closed(registrar: Registrar) -> None:
    api = HttpApi("127.0.0.1:0", DaemonState(), Metrics(), registrar).start()
    host, port = api.address.rsplit(":", 1)
    try:
        silent = socket.create_connection((host, int(port)))
        slow = socket.create_connection((host, int(port)))
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never the blank line
        assert closed_by_server(silent) and closed_by_server(slow)
        # A client that completes its headers is served, on a fresh connection and on a
        # kept-alive one that then goes quiet (closed after its response, not before).
        with requests.Session() as session:
            assert session.get(f"http://{api.address}/healthz", timeout=10).text == "ok\n"
            assert session.get(f"http://{api.address}/healthz", timeout=10).text == "ok\n"
        silent.close()
        slow.close()
    finally:
        api.stop()


@pytest.fixture
def grpc_api(registrar: Registrar) -> Iterator[tuple[GrpcApi, grpc.Channel]]:
    settings = GrpcSettings(listen="127.0.0.1:0", max_open_streams=2, max_rpcs=8)
    api = GrpcApi(settings, DaemonState(), registrar).start()
    channel = grpc.insecure_channel(api.address)
    yield api, channel
    channel.close()
    api.stop()


def test_token_less_streams_have_a_cap_of_their_own(
    grpc_api: tuple[GrpcApi, grpc.Channel],
) -> None:
    _, channel = grpc_api
    health = health_pb2_grpc.HealthStub(channel)
    watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=60) for _ in range(2)]
    for watch in watches:
        next(watch)  # each open and answered
    third = health.Watch(health_pb2.HealthCheckRequest(), timeout=60)
    with pytest.raises(grpc.RpcError) as refused:
        next(third)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_open_streams" in str(refused.value.details())
    # Register is not starved, and a closed watch frees its place.
    stub = pb_grpc.WorkerRegistryStub(channel)
    request = pb.RegisterRequest(capabilities=pb.WorkerCapabilitiesProto(id="w1"))
    assert stub.Register(request, timeout=10).success
    watches[0].cancel()

    def reopened() -> bool:
        try:
            next(health.Watch(health_pb2.HealthCheckRequest(), timeout=60))
        except grpc.RpcError:
            return False
        return True

    wait_until(reopened)


def test_a_request_that_is_not_a_message_is_invalid_argument(
    grpc_api: tuple[GrpcApi, grpc.Channel],
) -> None:
    _, channel = grpc_api
    good = pb.RegisterRequest(capabilities=pb.WorkerCapabilitiesProto(id="abc"))
    bad = good.SerializeToString().replace(b"abc", b"a\xffc")  # a string field not UTF-8
    register = channel.unary_unary(REGISTER)
    with pytest.raises(grpc.RpcError) as refused:
        register(bad, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed message" in str(refused.value.details())
    session = channel.stream_stream(SESSION)
    update = pb.CapabilityUpdate(
        action=pb.CapabilityUpdate.REGISTER, capabilities=pb.WorkerCapabilitiesProto(id="abc")
    ).SerializeToString()
    answers = [
        pb.UpdateAnswer.FromString(raw)
        for raw in session(iter([update.replace(b"abc", b"a\xffc"), update]), timeout=10)
    ]
    assert [(a.ok, a.message) for a in answers] == [(False, "malformed message"), (True, "")]
