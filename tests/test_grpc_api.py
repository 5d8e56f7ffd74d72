"""The gRPC API with real gRPC clients (the committed stubs) over loopback, against a
running daemon and the Consul double: every call, bad input, auth, limits, deadlines,
health following readiness, reflection, Watch resumed, a Session cut."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status

from discovery import schema
from discovery.proto import registry_pb2 as pb
from discovery.proto_convert import from_proto, to_proto
from tests.conftest import SEED_CRD_SPEC, run_cli
from tests.consul_target import ConsulTarget
from tests.daemon_process import wait_until
from tests.doubles.consul import ConsulDouble
from tests.grpc_daemon import GrpcDaemon, call_error

GRACE = 2.0
Code = grpc.StatusCode


@pytest.fixture
def target():
    with ConsulDouble() as double:
        yield ConsulTarget(double.address, double)


@pytest.fixture
def daemon(target: ConsulTarget, tmp_path: Path):
    proc = GrpcDaemon(target, tmp_path, env={"CAPSYNC_API__GRACE": f"{GRACE}s"}).started()
    yield proc
    assert proc.stop() == 0


def register(daemon: GrpcDaemon, declaration: dict, **kwargs) -> pb.RegisterResponse:
    caps = to_proto(schema.validate(declaration, ref="test"))
    return daemon.stub().Register(
        pb.RegisterRequest(capabilities=caps, **kwargs), metadata=daemon.metadata(), timeout=10
    )


def test_every_unary_call(daemon: GrpcDaemon, target: ConsulTarget):
    stub = daemon.stub()
    answer = register(daemon, SEED_CRD_SPEC)
    assert (answer.success, answer.message) == (True, "Worker registered")  # the seed's
    register(
        daemon,
        {
            "id": "py-worker",
            "test_framework_tools": [{"tool_name": "pytest"}],
            "metadata": {"team": "qa"},
        },
    )
    service = wait_until(lambda: target.services().get("rust-worker-1"))
    assert service["ServiceMeta"]["capsync-ref"] == "grpc/rust-worker-1"
    wait_until(lambda: len(target.services()) == 2)

    found = stub.Find(
        pb.FindRequest(capability_type="static_analysis", required_tools=["cargo-fmt"]), timeout=10
    )
    assert [from_proto(w, ref="t") for w in found.workers] == [
        schema.validate(SEED_CRD_SPEC, ref="crd")
    ]
    assert not stub.Find(
        pb.FindRequest(capability_type="nope", required_tools=["clippy"]), timeout=10
    ).workers
    cli = run_cli(
        "find",
        "--category",
        "static_analysis",
        "--tool",
        "cargo-fmt",
        "--json",
        "--owner",
        target.owner,
        env=target.env(),
    )
    assert [w["id"] for w in json.loads(cli.stdout)] == [w.id for w in found.workers]

    listed = stub.List(pb.ListRequest(meta={"team": "qa"}), timeout=10).workers
    assert [w.capabilities.id for w in listed] == ["py-worker"]
    assert [w.capabilities.id for w in stub.List(pb.ListRequest(), timeout=10).workers] == [
        "py-worker",
        "rust-worker-1",
    ]
    shown = stub.Get(pb.GetRequest(id="RUST-WORKER-1"), timeout=10)
    assert (shown.source, shown.ref, shown.owner) == ("push", "grpc/rust-worker-1", target.owner)

    gone = stub.Unregister(
        pb.UnregisterRequest(id="py-worker"), metadata=daemon.metadata(), timeout=10
    )
    assert (gone.success, gone.message) == (True, "Worker unregistered")
    wait_until(lambda: "py-worker" not in target.services())
    assert call_error(stub.Get, pb.GetRequest(id="py-worker"), timeout=10).code() == Code.NOT_FOUND
    assert (
        call_error(
            stub.Unregister,
            pb.UnregisterRequest(id="py-worker"),
            metadata=daemon.metadata(),
            timeout=10,
        ).code()
        == Code.NOT_FOUND
    )


def test_bad_input_auth_and_limits_change_nothing(daemon: GrpcDaemon, target: ConsulTarget):
    stub = daemon.stub()
    bad = pb.RegisterRequest(
        capabilities=pb.WorkerCapabilitiesProto(
            id="bad id", fuzzing_tools=[pb.ToolCapability(tool_name="")]
        )
    )
    refused = call_error(stub.Register, bad, metadata=daemon.metadata(), timeout=10)
    assert refused.code() == Code.INVALID_ARGUMENT
    status = rpc_status.from_call(refused)
    assert status is not None
    details = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(details)
    assert {v.field for v in details.field_violations} == {"id", "fuzzing_tools[0].tool_name"}

    worker = pb.RegisterRequest(capabilities=pb.WorkerCapabilitiesProto(id="w1"))
    assert call_error(stub.Register, worker, timeout=10).code() == Code.UNAUTHENTICATED
    assert (
        call_error(stub.Register, worker, metadata=daemon.metadata("wrong"), timeout=10).code()
        == Code.UNAUTHENTICATED
    )
    assert (
        call_error(stub.Unregister, pb.UnregisterRequest(id="w1"), timeout=10).code()
        == Code.UNAUTHENTICATED
    )
    assert (
        call_error(
            stub.Register,
            pb.RegisterRequest(capabilities=pb.WorkerCapabilitiesProto(id="w1"), ttl=-1),
            metadata=daemon.metadata(),
            timeout=10,
        ).code()
        == Code.INVALID_ARGUMENT
    )
    assert (
        call_error(
            stub.Register,
            pb.RegisterRequest(capabilities=pb.WorkerCapabilitiesProto(id="w1"), ttl=10**9),
            metadata=daemon.metadata(),
            timeout=10,
        ).code()
        == Code.INVALID_ARGUMENT
    )

    huge = pb.RegisterRequest(
        capabilities=pb.WorkerCapabilitiesProto(
            id="w1", metadata={f"k{i}": "v" * 500 for i in range(140)}
        )
    )
    assert huge.ByteSize() > 64 * 1024
    assert (
        call_error(stub.Register, huge, metadata=daemon.metadata(), timeout=10).code()
        == Code.RESOURCE_EXHAUSTED
    )
    needs_tools = call_error(stub.List, pb.ListRequest(category="fuzzing"), timeout=10)
    assert needs_tools.code() == Code.INVALID_ARGUMENT
    assert needs_tools.details() == "ListRequest.category and ListRequest.tools go together"
    assert (
        call_error(stub.Find, pb.FindRequest(capability_type="x" * 100), timeout=10).code()
        == Code.INVALID_ARGUMENT
    )
    # A registry slower than the caller's deadline: the caller hears DEADLINE_EXCEEDED.
    target.double.delay_requests(2)
    assert (
        call_error(stub.Get, pb.GetRequest(id="w1"), timeout=0.5).code() == Code.DEADLINE_EXCEEDED
    )
    target.double.clear_faults()
    assert stub.List(pb.ListRequest(), timeout=10).workers == []
    assert target.services() == {}


def test_a_worker_declared_elsewhere_is_refused_for_unregister(
    target: ConsulTarget, tmp_path: Path
):
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "f.json").write_text(json.dumps({"id": "file-worker"}))
    proc = GrpcDaemon(target, tmp_path, "--source", f"file:{fleet}").started()
    try:
        wait_until(lambda: "file-worker" in target.services())
        refused = call_error(
            proc.stub().Unregister,
            pb.UnregisterRequest(id="file-worker"),
            metadata=proc.metadata(),
            timeout=10,
        )
        assert refused.code() == Code.FAILED_PRECONDITION
        assert "remove it where it is declared" in refused.details()
    finally:
        assert proc.stop() == 0


def test_health_follows_readiness_and_reflection_lists_the_services(
    daemon: GrpcDaemon, target: ConsulTarget
):
    health = health_pb2_grpc.HealthStub(daemon.channel())

    def status(service: str = "") -> int:
        return health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status

    wait_until(lambda: status() == health_pb2.HealthCheckResponse.SERVING)
    assert status("capsync.v1.WorkerRegistry") == health_pb2.HealthCheckResponse.SERVING
    assert (
        call_error(health.Check, health_pb2.HealthCheckRequest(service="nope"), timeout=10).code()
        == Code.NOT_FOUND
    )
    watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=30)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING

    target.double.fail_requests(500)  # the registry is down
    register(daemon, {"id": "w-down"})  # asks for a cycle, which fails
    wait_until(lambda: status() == health_pb2.HealthCheckResponse.NOT_SERVING)
    assert daemon.get("/readyz").status_code == 503
    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
    target.double.clear_faults()
    register(daemon, {"id": "w-up"})
    wait_until(lambda: status() == health_pb2.HealthCheckResponse.SERVING)
    assert daemon.get("/readyz").status_code == 200
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()

    database = ProtoReflectionDescriptorDatabase(daemon.channel())
    assert set(database.get_services()) == {
        "capsync.v1.WorkerRegistry",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    service = database.FindFileContainingSymbol("capsync.v1.WorkerRegistry")
    assert "WorkerCapabilitiesProto" in {m.name for m in service.message_type}


def test_watch_snapshot_events_resume_and_deadline(daemon: GrpcDaemon):
    stub = daemon.stub()
    register(daemon, {"id": "before"})
    daemon.wait_for(lambda line: "event=cycle" in line and "1 created" in line)  # published
    watch = stub.Watch(pb.WatchRequest(), timeout=60)
    head = next(watch)
    assert head.WhichOneof("kind") == "snapshot" and head.snapshot.entries == 1
    entry = next(watch).entry
    assert (entry.id, entry.source, entry.declaration.id) == ("before", "push", "before")
    register(daemon, {"id": "during", "fuzzing_tools": [{"tool_name": "afl"}]})
    event = next(watch).event
    assert (event.action, event.entry.id) == (pb.Event.CREATED, "during")
    assert event.entry.declaration.fuzzing_tools[0].tool_name == "afl"
    watch.cancel()  # the client goes away

    register(daemon, {"id": "missed"})
    daemon.wait_for(lambda line: "event=cycle" in line and "missed" in line)
    resumed = stub.Watch(
        pb.WatchRequest(since=event.sequence, stream=head.snapshot.stream), timeout=60
    )
    head2 = next(resumed)
    assert head2.WhichOneof("kind") == "resumed"
    missed = next(resumed).event
    assert (missed.sequence, missed.entry.id) == (event.sequence + 1, "missed")
    resumed.cancel()
    # Another stream (a restarted daemon) or a forgotten sequence: a fresh snapshot.
    fresh = next(stub.Watch(pb.WatchRequest(since=1, stream="other"), timeout=10))
    assert fresh.snapshot.entries == 3

    kinds = []
    with pytest.raises(grpc.RpcError) as ended:
        for message in stub.Watch(pb.WatchRequest(), timeout=1):  # the deadline ends it
            kinds.append(message.WhichOneof("kind"))
    assert ended.value.code() == Code.DEADLINE_EXCEEDED and kinds[0] == "snapshot"


def test_session_registrations_leave_after_the_stream_is_cut(
    daemon: GrpcDaemon, target: ConsulTarget
):
    stub = daemon.stub()
    updates = [
        pb.CapabilityUpdate(
            action=pb.CapabilityUpdate.REGISTER, capabilities=pb.WorkerCapabilitiesProto(id=worker)
        )
        for worker in ("s-a", "s-b")
    ]
    bad = pb.CapabilityUpdate(
        action=pb.CapabilityUpdate.REGISTER, capabilities=pb.WorkerCapabilitiesProto(id="bad id")
    )
    unspecified = pb.CapabilityUpdate(capabilities=pb.WorkerCapabilitiesProto(id="s-c"))
    update_unknown = pb.CapabilityUpdate(
        action=pb.CapabilityUpdate.UPDATE, capabilities=pb.WorkerCapabilitiesProto(id="nobody")
    )
    opened = threading.Event()
    session = stub.Session(
        held_open([*updates, bad, unspecified, update_unknown], opened),
        metadata=daemon.metadata(),
        timeout=60,
    )
    answers = [next(session) for _ in range(5)]
    assert [(a.ok, a.id) for a in answers[:2]] == [(True, "s-a"), (True, "s-b")]
    assert answers[2].ok is False and [e.field for e in answers[2].errors] == ["capabilities.id"]
    assert answers[3].ok is False and answers[3].errors[0].field == "action"
    assert answers[4].message == "not registered: send Register first"
    wait_until(lambda: {"s-a", "s-b"} <= set(target.services()))
    time.sleep(GRACE)  # renewed while the stream lives: still there after the grace
    assert {"s-a", "s-b"} <= set(target.services())

    keep = stub.Session(
        iter(
            [
                pb.CapabilityUpdate(
                    action=pb.CapabilityUpdate.REGISTER,
                    capabilities=pb.WorkerCapabilitiesProto(id="s-b"),
                )
            ]
        ),
        metadata=daemon.metadata(),
        timeout=60,
    )
    session.cancel()  # the stream is cut
    cut = time.monotonic()
    assert next(keep).ok  # s-b comes back on another stream (which then ends: grace too)
    wait_until(lambda: "s-a" not in target.services(), 15, 0.05)
    assert time.monotonic() - cut >= GRACE  # not before the grace period
    opened.set()
    assert (
        call_error(lambda: list(stub.Session(iter(updates), timeout=10))).code()
        == Code.UNAUTHENTICATED
    )


def held_open(messages: list[pb.CapabilityUpdate], until: threading.Event):
    """A request stream that sends ``messages`` and then stays open until ``until``."""
    yield from messages
    until.wait(60)
