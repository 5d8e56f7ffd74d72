"""The declaration as the proto's ``WorkerCapabilitiesProto`` (discovery/proto/registry.proto),
both ways, losslessly.

``to_proto`` writes every part of every tool (as ``seed_json.to_seed`` does), so a reader
needs no defaults. ``as_declaration`` reads a message into the declaration's JSON form,
leaving out what the message does not set (the minimal form: the library's defaults
apply), and ``from_proto`` validates that with ``discovery.schema``: a message that fails
is refused whole, with every field path, never half-converted. The proto's field names
are the declaration's, so the paths read the same in both.

Needs the ``grpc`` extra (protobuf); only the gRPC front end imports this module.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from discovery import schema
from discovery.model import CATEGORIES, Capabilities, ToolCapability
from discovery.proto import registry_pb2 as pb

_OPTIONAL = {
    "permissions": ("memory_limit_mb", "cpu_limit_percent", "timeout_seconds"),
    "expiration": ("expires_at", "revocation_reason", "revoked_at", "revoked_by"),
}


def to_proto(caps: Capabilities) -> pb.WorkerCapabilitiesProto:
    message = pb.WorkerCapabilitiesProto(
        id=caps.id, flags=dict(caps.flags), metadata=dict(caps.metadata)
    )
    for category, field_name in CATEGORIES.items():
        getattr(message, field_name).extend(_tool(t) for t in caps.tools.get(category, ()))
    return message


def from_proto(message: pb.WorkerCapabilitiesProto, *, ref: str) -> Capabilities:
    """A validated declaration; DeclarationError naming ``ref`` and every field path."""
    return schema.validate(as_declaration(message), ref=ref)


def as_declaration(message: pb.WorkerCapabilitiesProto) -> dict[str, Any]:
    """The message as a declaration's JSON (what the inbox stores), unvalidated."""
    out: dict[str, Any] = {"id": message.id}
    for field_name in CATEGORIES.values():
        if tools := getattr(message, field_name):
            out[field_name] = [_tool_json(tool) for tool in tools]
    if message.flags:
        out["flags"] = dict(message.flags)
    if message.metadata:
        out["metadata"] = dict(message.metadata)
    return out


def _tool(tool: ToolCapability) -> pb.ToolCapability:
    return pb.ToolCapability(
        tool_name=tool.tool_name,
        required=tool.required,
        alternatives=tool.alternatives,
        permissions=pb.Permissions(**asdict(tool.permissions)),
        expiration=pb.Expiration(
            **{k: v for k, v in asdict(tool.expiration).items() if v is not None}
        ),
        attestation=pb.Attestation(**asdict(tool.attestation)) if tool.attestation else None,
        verified=tool.verified,
    )


def _tool_json(tool: pb.ToolCapability) -> dict[str, Any]:
    out: dict[str, Any] = {
        "tool_name": tool.tool_name,
        "required": tool.required,
        "alternatives": list(tool.alternatives),
        "verified": tool.verified,
    }
    for part in ("permissions", "expiration", "attestation"):
        if tool.HasField(part):
            out[part] = _present(getattr(tool, part), _OPTIONAL.get(part, ()))
    return out


def _present(message: Any, optional: tuple[str, ...]) -> dict[str, Any]:
    """A sub-message's fields; an ``optional`` one only when set (else its default)."""
    return {
        f.name: getattr(message, f.name)
        for f in message.DESCRIPTOR.fields
        if f.name not in optional or message.HasField(f.name)
    }
