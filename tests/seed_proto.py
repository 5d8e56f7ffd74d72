"""The seed's own proto (integration-guide.md, verbatim), compiled at test time with
grpcio-tools, and the seed's CRD example as a message of it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from grpc_tools import protoc

from tests.conftest import SEED_CRD_SPEC

SEED_PROTO = """syntax = "proto3";

message WorkerCapabilitiesProto {
    string id = 1;
    repeated ToolCapability static_analysis_tools = 2;
    repeated ToolCapability security_scanning_tools = 3;
    map<string, bool> flags = 4;
    map<string, string> metadata = 5;
}

message ToolCapability {
    string tool_name = 1;
    bool required = 2;
    repeated string alternatives = 3;
}
"""


def generate(out: Path, proto_dir: Path, proto: str, *kinds: str) -> None:
    args = ["protoc", f"-I{proto_dir}", *(f"--{k}_out={out}" for k in kinds), proto]
    assert protoc.main(args) == 0, args


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def seed_module(directory: Path) -> ModuleType:
    """seed_pb2, generated from the seed's proto text into ``directory`` (loaded once per
    process: the default descriptor pool takes a file once)."""
    if "seed_pb2" in sys.modules:
        return sys.modules["seed_pb2"]
    (directory / "seed.proto").write_text(SEED_PROTO)
    generate(directory, directory, "seed.proto", "python")
    return load(directory / "seed_pb2.py", "seed_pb2")


def seed_crd_message(seed: ModuleType) -> Any:
    """The seed's CRD example (camelCase spec) as the seed's five-field message."""
    spec = SEED_CRD_SPEC
    return seed.WorkerCapabilitiesProto(
        id=spec["id"],
        flags=spec["flags"],
        metadata=spec["metadata"],
        static_analysis_tools=[
            seed.ToolCapability(
                tool_name=t["toolName"],
                required=t["required"],
                alternatives=t.get("alternatives", []),
            )
            for t in spec["staticAnalysisTools"]
        ],
        security_scanning_tools=[
            seed.ToolCapability(tool_name=t["toolName"], required=t["required"])
            for t in spec["securityScanningTools"]
        ],
    )
