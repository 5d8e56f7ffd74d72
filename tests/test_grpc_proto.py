"""The shipped proto: the committed generated code is what grpcio-tools makes of it, the
seed's bytes decode unchanged, and the conversions are lossless both ways."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from config.errors import DeclarationError
from discovery import schema
from discovery.proto import registry_pb2 as pb
from discovery.proto_convert import as_declaration, from_proto, to_proto
from discovery.tool_terms import U64_MAX
from tests.conftest import ROOT, SEED_CRD_SPEC
from tests.seed_proto import generate, seed_crd_message, seed_module

PROTO = "discovery/proto/registry.proto"
# Lines that name the generator's version, not the proto's content.
VERSION_LINE = re.compile(
    r"^(# Protobuf Python Version:.*|GRPC_GENERATED_VERSION = .*|"
    r"    \d+,)$",
    re.MULTILINE,
)


def test_committed_code_is_what_the_proto_generates(tmp_path: Path):
    generate(tmp_path, ROOT, PROTO, "python", "pyi", "grpc_python")
    for name in ("registry_pb2.py", "registry_pb2.pyi", "registry_pb2_grpc.py"):
        fresh = (tmp_path / "discovery/proto" / name).read_text()
        committed = (ROOT / "discovery/proto" / name).read_text()
        assert VERSION_LINE.sub("", committed) == VERSION_LINE.sub("", fresh), (
            f"discovery/proto/{name} is stale: regenerate it with "
            f"python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. "
            f"--grpc_python_out=. {PROTO}"
        )


def test_the_proto_ships_in_the_package_with_the_seeds_numbers():
    assert pb.DESCRIPTOR.package == "capsync.v1"
    numbers = {f.name: f.number for f in pb.WorkerCapabilitiesProto.DESCRIPTOR.fields}
    assert numbers == {
        "id": 1,
        "static_analysis_tools": 2,
        "security_scanning_tools": 3,
        "flags": 4,
        "metadata": 5,
        "dynamic_analysis_tools": 6,
        "fuzzing_tools": 7,
        "test_framework_tools": 8,
    }
    tool = {f.name: f.number for f in pb.ToolCapability.DESCRIPTOR.fields}
    assert {k: v for k, v in tool.items() if v <= 3} == {
        "tool_name": 1,
        "required": 2,
        "alternatives": 3,
    }
    shipped = resources.files("discovery.proto") / "registry.proto"
    assert "package capsync.v1;" in shipped.read_text()


def test_bytes_of_the_seeds_message_decode_into_the_same_declaration(tmp_path: Path):
    seed = seed_module(tmp_path)
    message = seed_crd_message(seed)
    ours = pb.WorkerCapabilitiesProto.FromString(message.SerializeToString())
    assert from_proto(ours, ref="seed") == schema.validate(SEED_CRD_SPEC, ref="crd")
    # and back: what we write, a seed program reads (it keeps the fields it lacks as
    # unknown fields, which it does not look at)
    back = seed.WorkerCapabilitiesProto.FromString(
        to_proto(from_proto(ours, ref="s")).SerializeToString()
    )
    back.DiscardUnknownFields()
    assert back == message


def test_an_invalid_message_is_refused_whole_with_its_field_paths():
    message = pb.WorkerCapabilitiesProto(
        id="bad id",
        flags={"ok": True},
        fuzzing_tools=[
            pb.ToolCapability(tool_name=""),
            pb.ToolCapability(tool_name="afl", permissions=pb.Permissions(cpu_limit_percent=101)),
        ],
    )
    with pytest.raises(DeclarationError) as refused:
        from_proto(message, ref="grpc")
    assert {loc for loc, _ in refused.value.problems} == {
        "id",
        "fuzzing_tools[0].tool_name",
        "fuzzing_tools[1].permissions.cpu_limit_percent",
    }


def test_unset_parts_take_the_librarys_defaults():
    message = pb.WorkerCapabilitiesProto(
        id="w",
        test_framework_tools=[
            pb.ToolCapability(
                tool_name="pytest",
                permissions=pb.Permissions(network_access=True),
                expiration=pb.Expiration(revoked=True),
            )
        ],
    )
    assert as_declaration(message)["test_framework_tools"][0] == {
        "tool_name": "pytest",
        "required": False,
        "alternatives": [],
        "verified": False,
        "permissions": {
            "filesystem_access": False,
            "network_access": True,
            "process_spawn": False,
            "env_access": False,
            "system_access": False,
        },
        "expiration": {"revoked": True},
    }
    tool = from_proto(message, ref="t").tools["test_framework"][0]
    assert tool.permissions.memory_limit_mb == 128 and tool.expiration.revoked
    assert tool.expiration.revocation_reason is None


NAME = st.from_regex(r"[a-z0-9][a-z0-9+._/-]{0,15}", fullmatch=True)
KEY = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
U64 = st.integers(0, U64_MAX)
OPTIONAL_TEXT = st.none() | st.text(max_size=20)
TOOL = st.fixed_dictionaries(
    {"tool_name": NAME},
    optional={
        "required": st.booleans(),
        "alternatives": st.lists(NAME, max_size=4),
        "verified": st.booleans(),
        "permissions": st.fixed_dictionaries(
            {},
            optional={
                "filesystem_access": st.booleans(),
                "network_access": st.booleans(),
                "process_spawn": st.booleans(),
                "env_access": st.booleans(),
                "system_access": st.booleans(),
                "memory_limit_mb": U64,
                "cpu_limit_percent": st.integers(0, 100),
                "timeout_seconds": U64,
            },
        ),
        "expiration": st.fixed_dictionaries(
            {},
            optional={
                "expires_at": U64,
                "revoked": st.booleans(),
                "revocation_reason": OPTIONAL_TEXT,
                "revoked_at": st.none() | U64,
                "revoked_by": OPTIONAL_TEXT,
            },
        ),
        "attestation": st.none()
        | st.fixed_dictionaries(
            {
                "capability_hash": st.text(max_size=64),
                "signature": st.text(max_size=20),
                "public_key": st.text(max_size=20),
                "timestamp": U64,
                "algorithm": st.sampled_from(["SHA256-RSA", "", "md5"]),
                "attester": st.text(max_size=20),
            }
        ),
    },
)
TOOLS = st.lists(TOOL, max_size=3, unique_by=lambda t: t["tool_name"])
DECLARATION = st.fixed_dictionaries(
    {"id": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,30}", fullmatch=True)},
    optional={
        "static_analysis_tools": TOOLS,
        "security_scanning_tools": TOOLS,
        "dynamic_analysis_tools": TOOLS,
        "fuzzing_tools": TOOLS,
        "test_framework_tools": TOOLS,
        "flags": st.dictionaries(KEY, st.booleans(), max_size=6),
        "metadata": st.dictionaries(
            KEY.filter(lambda k: not k.startswith(("capsync", "flag-", "external"))),
            st.text(max_size=40),
            max_size=5,
        ),
    },
)


@settings(max_examples=200, deadline=None)
@given(DECLARATION)
def test_declaration_proto_declaration_is_lossless(data: dict[str, Any]):
    try:
        caps = schema.validate(data, ref="generated")
    except DeclarationError:
        assume(False)  # over a registry limit: not a declaration
    message = to_proto(caps)
    wire = pb.WorkerCapabilitiesProto.FromString(message.SerializeToString())
    assert from_proto(wire, ref="proto") == caps
    assert schema.validate(as_declaration(wire), ref="json") == caps
