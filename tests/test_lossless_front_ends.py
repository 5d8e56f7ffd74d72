"""The library's full form through the daemon's front ends, against every registry kind:
registered over REST and over gRPC, read back over REST (list, one worker, the seed's
find) and over gRPC by a client generated from the shipped ``.proto`` alone, converted to
the library's JSON as the README documents; equal to what was declared. And server
reflection v1 beside v1alpha."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import requests
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from tests.backends import Backend
from tests.consul_target import ConsulTarget
from tests.doubles.consul import ConsulDouble
from tests.grpc_daemon import GrpcDaemon, generated_client, run_client
from tests.seed_library import oracle_has_capability, oracle_provides, variant_fleet

# A client in its own process, from the shipped .proto and protobuf's JSON mapping only:
# library JSON -> message with ParseDict; message -> library JSON as the README says.
CLIENT = r"""
import json, sys, time
import grpc
from google.protobuf import json_format
import registry_pb2 as pb, registry_pb2_grpc as pb_grpc

CATEGORIES = ["static_analysis_tools", "security_scanning_tools", "dynamic_analysis_tools",
              "fuzzing_tools", "test_framework_tools"]
U64 = {"permissions": ["memory_limit_mb", "timeout_seconds"],
       "expiration": ["expires_at", "revoked_at"], "attestation": ["timestamp"]}
NULLABLE = ["revocation_reason", "revoked_at", "revoked_by"]

def library_json(message):
    out = json_format.MessageToDict(message, preserving_proto_field_name=True,
                                    always_print_fields_with_no_presence=True)
    for field in CATEGORIES:
        for tool in out[field]:
            tool.setdefault("attestation", None)
            for name in NULLABLE:
                tool["expiration"].setdefault(name, None)
            for part, names in U64.items():
                for name in names:
                    if tool[part] is not None and tool[part].get(name) is not None:
                        tool[part][name] = int(tool[part][name])
    return out

address, token, fleet_file, ids_file = sys.argv[1:5]
fleet = json.load(open(fleet_file))
ids = json.load(open(ids_file))
stub = pb_grpc.WorkerRegistryStub(grpc.insecure_channel(address))
auth = [("authorization", "Bearer " + token)]
for worker in fleet:
    message = json_format.ParseDict(worker, pb.WorkerCapabilitiesProto())
    answer = stub.Register(pb.RegisterRequest(capabilities=message), metadata=auth, timeout=10)
    assert answer.success, answer.message
for _ in range(300):
    listed = stub.List(pb.ListRequest(), timeout=10).workers
    if sorted(w.capabilities.id for w in listed) == sorted(ids):
        break
    time.sleep(0.1)
found = stub.Find(pb.FindRequest(capability_type="static_analysis",
                                 required_tools=["Clippy"]), timeout=10).workers
folded = stub.List(pb.ListRequest(has=["clippy"], ignore_case=True), timeout=10).workers
print(json.dumps({
    "listed": [library_json(w.capabilities) for w in listed],
    "got": library_json(stub.Get(pb.GetRequest(id=fleet[0]["id"]), timeout=10).capabilities),
    "found": sorted(w.id for w in found),
    "folded": sorted(w.capabilities.id for w in folded),
}))
"""


@contextmanager
def daemon_on(backend: Backend, state: Path) -> Iterator[GrpcDaemon]:
    """A daemon with the push source and the gRPC listener writing to ``backend``."""
    with ConsulDouble() as spare:
        target = backend.consul or ConsulTarget(spare.address, spare)
        proc = GrpcDaemon(target, state, "--registry", backend.registry, env=backend.env())
        proc.started()
        try:
            yield proc
        finally:
            assert proc.stop() == 0


def test_rest_and_grpc_give_back_what_was_declared(backend: Backend, tmp_path: Path):
    now = int(time.time())
    fleet = variant_fleet(now, consul_meta=backend.consul is None)
    by_rest, by_grpc = fleet[::2], fleet[1::2]
    ids = sorted(w["id"] for w in fleet)
    (tmp_path / "fleet.json").write_text(json.dumps(by_grpc))
    (tmp_path / "ids.json").write_text(json.dumps(ids))
    directory = generated_client(tmp_path / "client", CLIENT)
    with daemon_on(backend, tmp_path) as proc:
        for worker in by_rest:
            assert proc.register(worker).json()["success"] is True
        grpc_side = run_client(
            directory,
            proc.grpc_address,
            proc.token or "",
            str(tmp_path / "fleet.json"),
            str(tmp_path / "ids.json"),
            timeout=120,
        )
        base = f"http://{proc.address}"
        listed = requests.get(f"{base}/workers", timeout=10).json()
        one = requests.get(f"{base}/workers/{fleet[1]['id']}", timeout=10).json()
        found = requests.post(
            f"{base}/workers/find",
            json={"capability_type": "static_analysis", "required_tools": ["clippy"]},
            timeout=10,
        ).json()
        folded = requests.get(
            f"{base}/workers", params={"has": "CLIPPY", "ignore_case": "true"}, timeout=10
        ).json()
        exact = requests.get(f"{base}/workers", params={"has": "CLIPPY"}, timeout=10).json()

    declared = {w["id"]: w for w in fleet}
    assert {w["id"]: w["declaration"] for w in listed} == declared
    assert one["declaration"] == declared[fleet[1]["id"]]
    assert sorted(w["id"] for w in found) == sorted(
        i
        for i, w in declared.items()
        if oracle_has_capability(w, "static_analysis", "clippy".__eq__, now)
    )
    assert sorted(w["id"] for w in exact) == ["variant-4"]
    assert sorted(w["id"] for w in folded) == sorted(
        i for i, w in declared.items() if oracle_provides(w, "clippy", now, fold=True)
    )
    assert {w["id"]: w for w in grpc_side["listed"]} == declared  # every empty list too
    assert grpc_side["got"] == by_grpc[0]
    assert grpc_side["found"] == ["variant-1"]
    assert grpc_side["folded"] == sorted(w["id"] for w in folded)


def test_server_reflection_v1_beside_v1alpha(tmp_path: Path):
    with ConsulDouble() as double:
        proc = GrpcDaemon(ConsulTarget(double.address, double), tmp_path).started()
        try:
            answers = {
                version: reflect(proc.channel(), version)
                for version in ("grpc.reflection.v1", "grpc.reflection.v1alpha")
            }
        finally:
            assert proc.stop() == 0
    for version, (services, file) in answers.items():
        assert services == {
            "capsync.v1.WorkerRegistry",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        }, version
        assert file.package == version and [s.name for s in file.service] == ["ServerReflection"]


def reflect(channel: grpc.Channel, version: str) -> tuple[set[str], Any]:
    """ListServices, then the file holding the reflection service itself, asked through
    ``version``'s method (v1's messages are v1alpha's, field for field, on the wire)."""
    call = channel.stream_stream(
        f"/{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    requests_ = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol=f"{version}.ServerReflection"
        ),
    ]
    listed, described = list(call(iter(requests_), timeout=10))
    file = descriptor_pb2.FileDescriptorProto.FromString(
        described.file_descriptor_response.file_descriptor_proto[0]
    )
    return {s.name for s in listed.list_services_response.service}, file
