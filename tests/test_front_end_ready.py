"""Ready means ready: from the moment a listener accepts, a registration is stored or
answered "not ready yet" with a time to retry, never with a message that blames a
configuration that is right. The front ends are served in-process here, with a push
context whose sources are not built yet (as between the listener's start and the
runtime's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests

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


@pytest.fixture
def starting(tmp_path: Path) -> Iterator[tuple[RegistrationContext, list[bool]]]:
    inbox = SqliteInbox(tmp_path / "inbox.db")
    built = [False]
    ctx = RegistrationContext(
        inbox=lambda: inbox,
        registry=lambda: None,
        request=lambda reason: None,
        bus=EventBus(),
        settings=ApiSettings(),
        started=lambda: built[0],
    )
    yield ctx, built
    inbox.close()


def test_rest_says_not_ready_yet_then_stores(
    starting: tuple[RegistrationContext, list[bool]],
) -> None:
    ctx, built = starting
    api = HttpApi("127.0.0.1:0", DaemonState(), Metrics(), Registrar(ctx)).start()
    try:
        url = f"http://{api.address}/workers/register"
        early = requests.post(url, json={"id": "early"}, timeout=10)
        assert early.status_code == 503
        assert early.headers["Retry-After"] == "1"
        assert "not ready yet" in early.json()["message"]
        assert "configured" not in early.text
        built[0] = True
        assert requests.post(url, json={"id": "early"}, timeout=10).status_code == 200
    finally:
        api.stop()


def test_grpc_says_unavailable_not_ready_yet(
    starting: tuple[RegistrationContext, list[bool]],
) -> None:
    ctx, built = starting
    api = GrpcApi(GrpcSettings(listen="127.0.0.1:0"), DaemonState(), Registrar(ctx)).start()
    channel = grpc.insecure_channel(api.address)
    try:
        stub = pb_grpc.WorkerRegistryStub(channel)
        request = pb.RegisterRequest(capabilities=pb.WorkerCapabilitiesProto(id="early"))
        with pytest.raises(grpc.RpcError) as refused:
            stub.Register(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "not ready yet" in str(refused.value.details())
        built[0] = True
        assert stub.Register(request, timeout=10).success
    finally:
        channel.close()
        api.stop()
