"""The library's full serde form of a declaration, the one JSON every store writes.

worker-capabilities deserialises with serde and no defaults, so a reader of what capsync
writes (its PostgreSQL ``load_capabilities``, a Redis ``GET``) needs every field present:
``to_seed`` writes them all, with the library's defaults (and an expiry that never
passes, ``tool_terms.NEVER_EXPIRES``) where the declaration left them out. ``from_seed``
reads either form back through the schema's validation.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from discovery import schema
from discovery.model import CATEGORIES, Capabilities, ToolCapability


def to_seed(caps: Capabilities) -> dict[str, Any]:
    """The declaration as the library serialises it: snake_case, every field present."""
    out: dict[str, Any] = {"id": caps.id}
    for category, field_name in CATEGORIES.items():
        out[field_name] = [_tool(tool) for tool in caps.tools.get(category, ())]
    out["flags"] = dict(caps.flags)
    out["metadata"] = dict(caps.metadata)
    return out


def from_seed(data: Any, *, ref: str = "seed-json") -> Capabilities:
    """Either form back into a validated declaration; DeclarationError naming ``ref``."""
    return schema.validate(data, ref=ref)


def _tool(tool: ToolCapability) -> dict[str, Any]:
    return {
        "tool_name": tool.tool_name,
        "required": tool.required,
        "alternatives": list(tool.alternatives),
        "attestation": asdict(tool.attestation) if tool.attestation else None,
        "permissions": asdict(tool.permissions),
        "expiration": asdict(tool.expiration),
        "verified": tool.verified,
    }
