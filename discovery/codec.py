"""The registry encoding: a Capabilities record <-> one Consul service instance.

Consumers query this encoding directly (``"clippy" in ServiceTags``, DNS
``clippy.worker.service.consul``, ``ServiceMeta.fuzzing``), so it is a public contract:
decode(encode(x)) == x for every valid declaration, and it never breaks Consul's limits.

Meta layout::

    external-source  = capsync            capsync-owner  = <owner id>
    capsync-source   = docker|file|...    capsync-ref    = <where it was found>
    capsync-digest   = <digest of the canonical declaration and its origin>
    <category>       = name[!][|alt...],...     one key per non-empty category
    flag-<name>      = true|false
    <metadata key>   = <value>                 verbatim
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from config.errors import DeclarationError
from discovery.model import CATEGORIES, Capabilities, ToolCapability

MAX_META_PAIRS = 64
MAX_META_KEY = 128
MAX_META_VALUE = 512

EXTERNAL_SOURCE = "external-source"
OWNER = "capsync-owner"
SOURCE = "capsync-source"
REF = "capsync-ref"
DIGEST = "capsync-digest"
FIXED_KEYS = (EXTERNAL_SOURCE, OWNER, SOURCE, REF, DIGEST)
FLAG_PREFIX = "flag-"
RESERVED_PREFIXES = ("capsync-", FLAG_PREFIX, "consul-")
RESERVED_KEYS = frozenset(FIXED_KEYS) | frozenset(CATEGORIES)


@dataclass(frozen=True, slots=True)
class Entry:
    """One service instance as capsync writes it and reads it back.

    Equality is the diff's test: an owned entry equal to the desired one is unchanged.
    """

    id: str
    service: str
    tags: tuple[str, ...]
    meta: Mapping[str, str] = field(default_factory=dict)
    address: str = ""
    port: int = 0

    @property
    def owner(self) -> str:
        return self.meta.get(OWNER, "")

    @property
    def source(self) -> str:
        return self.meta.get(SOURCE, "")

    @property
    def ref(self) -> str:
        return self.meta.get(REF, "")


def encode(
    caps: Capabilities,
    *,
    service: str,
    owner: str,
    source: str,
    ref: str,
    address: str = "",
    port: int = 0,
) -> Entry:
    meta = {
        EXTERNAL_SOURCE: "capsync",
        OWNER: owner,
        SOURCE: source,
        REF: ref_value(ref),
        **_declaration_meta(caps),
    }
    tags = tuple(caps.all_tools())
    meta[DIGEST] = _digest(
        caps.id, service=service, tags=tags, meta=meta, address=address, port=port
    )
    return Entry(id=caps.id, service=service, tags=tags, meta=meta, address=address, port=port)


def decode(entry: Entry) -> Capabilities:
    """Give back the declaration an entry encodes; DeclarationError if it is not ours."""
    tools: dict[str, tuple[ToolCapability, ...]] = {}
    flags: dict[str, bool] = {}
    metadata: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    for key, value in entry.meta.items():
        if key in CATEGORIES:
            tools[key] = tuple(_decode_tool(item) for item in value.split(","))
        elif key.startswith(FLAG_PREFIX):
            if value not in ("true", "false"):
                problems.append((f"ServiceMeta.{key}", f"flag value {value!r} is not true|false"))
            flags[key.removeprefix(FLAG_PREFIX)] = value == "true"
        elif key not in FIXED_KEYS:
            metadata[key] = value
    if problems:
        raise DeclarationError(entry.id, problems)
    return Capabilities(
        id=entry.id,
        tools={category: tools[category] for category in CATEGORIES if category in tools},
        flags=flags,
        metadata=metadata,
    )


def limit_problems(caps: Capabilities) -> list[tuple[str, str]]:
    """Every way this declaration's registry entry would break Consul's limits.

    Key rules (characters, length, reserved names) are checked per key by the schema.
    """
    problems = []
    meta = _declaration_meta(caps)
    pairs = len(meta) + len(FIXED_KEYS)
    if pairs > MAX_META_PAIRS:
        problems.append(
            (
                "",
                f"the registry entry would need {pairs} meta pairs ({len(FIXED_KEYS)} "
                "reserved + one per non-empty category + flags + metadata); Consul allows "
                f"at most {MAX_META_PAIRS}",
            )
        )
    for category, field_name in CATEGORIES.items():
        if (size := utf8_len(meta.get(category, ""))) > MAX_META_VALUE:
            problems.append(
                (
                    field_name,
                    f"encoded as meta {category!r} these tools take {size} bytes (UTF-8); "
                    f"Consul allows at most {MAX_META_VALUE} bytes per meta value",
                )
            )
    return problems


def utf8_len(text: str) -> int:
    """Consul checks its limits with Go's ``len``: UTF-8 bytes, not characters."""
    return len(text.encode("utf-8", "surrogatepass"))


def ref_value(ref: str) -> str:
    """A reference as stored in ``capsync-ref``: informational, so it is cut to Consul's
    512-byte value limit on a character boundary; bytes that are not text (a file name
    in another encoding) are escaped, never sent as lone surrogates."""
    raw = ref.encode("utf-8", "backslashreplace")[:MAX_META_VALUE]
    return raw.decode("utf-8", "ignore")


def _declaration_meta(caps: Capabilities) -> dict[str, str]:
    meta = {
        category: ",".join(_encode_tool(tool) for tool in tools)
        for category, tools in caps.tools.items()
    }
    meta.update(
        {f"{FLAG_PREFIX}{name}": "true" if on else "false" for name, on in caps.flags.items()}
    )
    meta.update(caps.metadata)
    return meta


def _encode_tool(tool: ToolCapability) -> str:
    return "|".join((tool.tool_name + ("!" if tool.required else ""), *tool.alternatives))


def _decode_tool(item: str) -> ToolCapability:
    name, *alternatives = item.split("|")
    return ToolCapability(
        tool_name=name.removesuffix("!"),
        required=name.endswith("!"),
        alternatives=tuple(alternatives),
    )


def _digest(
    worker_id: str,
    *,
    service: str,
    tags: tuple[str, ...],
    meta: Mapping[str, str],
    address: str,
    port: int,
) -> str:
    canonical = json.dumps(
        [worker_id, service, tags, sorted(meta.items()), address, port],
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def reserved_reason(key: str) -> str:
    """Why a metadata key may not be used, or "" when it may."""
    if key not in RESERVED_KEYS and not key.startswith(RESERVED_PREFIXES):
        return ""
    if key.startswith("consul-"):
        return f"key {key!r}: Consul reserves the 'consul-' prefix for internal use"
    return (
        f"key {key!r} is reserved by the registry encoding (reserved: "
        f"{', '.join(sorted(RESERVED_KEYS))}, and the prefixes 'capsync-' and 'flag-')"
    )
