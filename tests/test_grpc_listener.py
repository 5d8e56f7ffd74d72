"""The gRPC listener as an operator sets it up: TLS with a client CA, the loopback rule,
the optional extra; and a client that a user generates from the shipped .proto (not the
committed Python code), in a program of its own."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from discovery.proto import registry_pb2 as pb
from discovery.proto import registry_pb2_grpc as pb_grpc
from tests.conftest import run_cli
from tests.consul_target import ConsulTarget
from tests.daemon_process import wait_until
from tests.doubles.consul import ConsulDouble
from tests.grpc_daemon import GrpcDaemon, call_error, generated_client, run_client
from tests.seed_proto import seed_crd_message, seed_module
from tests.test_consul_tls import make_pki


@pytest.fixture
def target():
    with ConsulDouble() as double:
        yield ConsulTarget(double.address, double)


def test_tls_with_a_client_ca(target: ConsulTarget, tmp_path: Path):
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    proc = GrpcDaemon(
        target,
        tmp_path,
        env={
            "CAPSYNC_GRPC__CERT_FILE": str(pki / "server.pem"),
            "CAPSYNC_GRPC__KEY_FILE": str(pki / "server.key"),
            "CAPSYNC_GRPC__CLIENT_CA_FILE": str(pki / "ca.pem"),
        },
    ).started()
    try:
        ca = (pki / "ca.pem").read_bytes()
        trusted = grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=(pki / "client.key").read_bytes(),
            certificate_chain=(pki / "client.pem").read_bytes(),
        )
        with grpc.secure_channel(proc.grpc_address, trusted) as channel:
            stub = pb_grpc.WorkerRegistryStub(channel)
            assert stub.Register(
                pb.RegisterRequest(capabilities=pb.WorkerCapabilitiesProto(id="tls-worker")),
                metadata=proc.metadata(),
                timeout=10,
            ).success
        anonymous = grpc.ssl_channel_credentials(root_certificates=ca)
        with grpc.secure_channel(proc.grpc_address, anonymous) as channel:
            refused = call_error(
                pb_grpc.WorkerRegistryStub(channel).List, pb.ListRequest(), timeout=10
            )
            assert refused.code() == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(proc.grpc_address) as channel:
            assert (
                call_error(
                    pb_grpc.WorkerRegistryStub(channel).List, pb.ListRequest(), timeout=10
                ).code()
                == grpc.StatusCode.UNAVAILABLE
            )
        wait_until(lambda: "tls-worker" in target.services())
    finally:
        assert proc.stop() == 0


def test_start_up_refusals(target: ConsulTarget, tmp_path: Path):
    args = ("run", "--listen", "off", "--source", f"push:{tmp_path / 'inbox.db'}")
    refused = run_cli(*args, env=target.env(CAPSYNC_GRPC__LISTEN="0.0.0.0:0"))
    assert refused.returncode != 0
    assert "grpc.listen 0.0.0.0:0: not a loopback address and no API token" in refused.stderr
    # Without the extra installed, the error names it.
    blocked = tmp_path / "blocked" / "grpc"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError(\"No module named 'grpc'\")\n")
    missing = run_cli(
        *args, env=target.env(CAPSYNC_GRPC__LISTEN="127.0.0.1:0", PYTHONPATH=str(blocked.parent))
    )
    assert missing.returncode != 0
    assert "pip install 'capsync[grpc]'" in missing.stderr


CLIENT = """
import json, sys
import grpc
import registry_pb2 as pb, registry_pb2_grpc as pb_grpc
address, token, seed_bytes = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3])
stub = pb_grpc.WorkerRegistryStub(grpc.insecure_channel(address))
watch = stub.Watch(pb.WatchRequest(), timeout=30)
head = next(watch)
caps = pb.WorkerCapabilitiesProto.FromString(seed_bytes)
answer = stub.Register(pb.RegisterRequest(capabilities=caps),
                       metadata=[("authorization", "Bearer " + token)], timeout=10)
event = next(watch).event
found = stub.Find(pb.FindRequest(capability_type="static_analysis",
                                 required_tools=["clippy"]), timeout=10)
print(json.dumps({"module": pb.__file__, "answer": [answer.success, answer.message],
                  "snapshot": head.WhichOneof("kind"),
                  "event": [pb.Event.Action.Name(event.action), event.entry.id],
                  "found": [w.id for w in found.workers],
                  "tags": [t.tool_name for t in found.workers[0].static_analysis_tools]}))
"""


def test_a_client_generated_from_the_shipped_proto(target: ConsulTarget, tmp_path: Path):
    client_dir = generated_client(tmp_path / "client", CLIENT)
    seed_bytes = seed_crd_message(seed_module(tmp_path)).SerializeToString()
    proc = GrpcDaemon(target, tmp_path).started()
    try:
        result = run_client(client_dir, proc.grpc_address, proc.token or "", seed_bytes.hex())
        assert result["module"].startswith(str(client_dir))  # not the committed code
        assert result == {
            **result,
            "answer": [True, "Worker registered"],
            "snapshot": "snapshot",
            "event": ["CREATED", "rust-worker-1"],
            "found": ["rust-worker-1"],
            "tags": ["clippy", "rustfmt"],
        }
        assert sorted(target.services()["rust-worker-1"]["ServiceTags"]) == [
            "cargo-audit",
            "cargo-fmt",
            "clippy",
            "rustfmt",
        ]
    finally:
        assert proc.stop() == 0


def test_limits_on_streams_and_garbage_on_the_wire(target: ConsulTarget, tmp_path: Path):
    proc = GrpcDaemon(target, tmp_path, env={"CAPSYNC_API__MAX_WATCHERS": "1"}).started()
    try:
        stub = proc.stub()
        first = stub.Watch(pb.WatchRequest(), timeout=60)
        assert next(first).WhichOneof("kind") == "snapshot"
        second = stub.Watch(pb.WatchRequest(), timeout=10)
        refused = call_error(next, second)
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.details() == "too many watchers"
        first.cancel()  # a watcher that leaves makes room
        wait_until(lambda: watch_opens(stub))

        garbage = proc.channel().unary_unary("/capsync.v1.WorkerRegistry/Register")
        wrong = call_error(
            garbage, b"\xff\xff\xff\xff not a message", metadata=proc.metadata(), timeout=10
        )
        # Bytes that do not parse are the caller's error, never INTERNAL.
        assert wrong.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert str(wrong.details()).startswith("malformed message")
        unknown = proc.channel().unary_unary("/capsync.v1.WorkerRegistry/Nope")
        assert call_error(unknown, b"", timeout=10).code() == grpc.StatusCode.UNIMPLEMENTED
        assert stub.List(pb.ListRequest(), timeout=10).workers == []  # still answering
    finally:
        assert proc.stop() == 0


def watch_opens(stub: pb_grpc.WorkerRegistryStub) -> bool:
    call = stub.Watch(pb.WatchRequest(), timeout=10)
    try:
        return next(call).WhichOneof("kind") == "snapshot"
    except grpc.RpcError:
        return False
    finally:
        call.cancel()
