"""The registry encoding: a Capabilities record <-> one Consul service instance.

Consumers query this encoding directly (``"clippy" in ServiceTags``, DNS
``clippy.worker.service.consul``, ``ServiceMeta.fuzzing``), so it is a public contract:
names, flags and metadata appear exactly as declared, and decode(encode(x)) == x.

Meta layout::

    external-source  = capsync            capsync-owner  = <owner id>
    capsync-source   = docker|file|...    capsync-ref    = <where it was found>
    capsync-digest   = <digest of the canonical declaration and its origin>
    <category>       = name[!][|alt...],...     one key per non-empty category
    flag-<name>      = true|false
    <metadata key>   = <value>                 verbatim

A declaration in the library's full form (a tool with permissions, an expiry, a
revocation, an attestation or ``verified``), and one whose names meta cannot separate
(a name holding ``,`` or ``|``, or ending in ``!``), carries more than meta can hold (attestations
alone would break 64 pairs of 512 bytes). Its query-relevant part goes in tags and meta,
computed at encode time with the cycle's ``now``; the rest is the ``document`` (the full
JSON), which the registry stores beside the entry (Consul: a KV key, named in meta)::

    tags                 the live tools only (an expired or revoked tool provides nothing)
                         + perm:<category>:<permission>  (the library's permission test)
                         + expired:<tool>, revoked:<tool>
    capsync-verified     = true|false   (the library's verify_all_capabilities at now)
    capsync-next-expiry  = <unix s>     (the earliest expiry still to come, if any)
    capsync-document     = <where the document is stored>
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from config.errors import DeclarationError
from discovery.health import PASSING, Health
from discovery.model import CATEGORIES, Capabilities, ToolCapability
from discovery.tool_terms import NEVER_EXPIRES, PERMISSIONS

MAX_META_PAIRS = 64
MAX_META_KEY = 128
MAX_META_VALUE = 512

EXTERNAL_SOURCE = "external-source"
OWNER = "capsync-owner"
SOURCE = "capsync-source"
REF = "capsync-ref"
DIGEST = "capsync-digest"
FIXED_KEYS = (EXTERNAL_SOURCE, OWNER, SOURCE, REF, DIGEST)
VERIFIED = "capsync-verified"
NEXT_EXPIRY = "capsync-next-expiry"
DOCUMENT = "capsync-document"
TERM_KEYS = (VERIFIED, NEXT_EXPIRY, DOCUMENT)
FLAG_PREFIX = "flag-"
RESERVED_PREFIXES = ("capsync-", FLAG_PREFIX)
CONSUL_META_KEY = re.compile(r"[A-Za-z0-9_-]+")
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
    # The full form stored beside the entry; its digest is in meta, so equality (the
    # diff's test) need not compare it, and a registry need not read it back to diff.
    document: str = field(default="", compare=False)
    # The worker's health: beside the entry, never in its digest nor in equality (a
    # health change is a health update, never a rewrite of the declaration).
    health: Health = field(default=PASSING, compare=False)

    @property
    def owner(self) -> str:
        return self.meta.get(OWNER, "")

    @property
    def source(self) -> str:
        return self.meta.get(SOURCE, "")

    @property
    def ref(self) -> str:
        return self.meta.get(REF, "")


@dataclass(frozen=True)
class Provenance:
    """Whose an entry is and where its declaration was found: the service and owner it
    is written for, the source and reference it came from, the address (and port) it
    names."""

    service: str
    owner: str
    source: str
    ref: str
    address: str = ""
    port: int = 0


def encode(
    caps: Capabilities,
    origin: Provenance,
    *,
    now: int = 0,
    document: str = "",
    document_key: str = "",
) -> Entry:
    """``now`` decides which tools are live; a ``document`` (the full form, for a
    declaration that has one) is stored under ``document_key`` by the registry."""
    meta = {
        EXTERNAL_SOURCE: "capsync",
        OWNER: origin.owner,
        SOURCE: origin.source,
        REF: ref_value(origin.ref),
        **_declaration_meta(caps),
    }
    tags = tuple(caps.provided_tools(now))
    if document:
        tags += _term_tags(caps, now)
        meta.update(_term_meta(caps, now, document_key))
    # The digest is of everything the entry says (its meta before the digest is added).
    said: list[object] = [caps.id, origin.service, tags, sorted(meta.items())]
    said += [origin.address, origin.port, *([document] if document else [])]
    meta[DIGEST] = _digest(said)
    return Entry(caps.id, origin.service, tags, meta, origin.address, origin.port, document)


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
        elif key not in FIXED_KEYS and key not in TERM_KEYS:
            metadata[key] = value
    if problems:
        raise DeclarationError(entry.id, problems)
    return Capabilities(
        id=entry.id,
        tools={category: tools[category] for category in CATEGORIES if category in tools},
        flags=flags,
        metadata=metadata,
    )


def meta_lossless(caps: Capabilities) -> bool:
    """True when the category meta alone gives back every name: none holds a separator
    (``,`` between tools, ``|`` before an alternative) or ends in the required mark."""
    return not any(
        "," in name or "|" in name or name.endswith("!")
        for tool in caps.iter_tools()
        for name in (tool.tool_name, *tool.alternatives)
    )


def consul_problems(entry: Entry) -> list[str]:
    """Every way this entry breaks Consul's meta rules (ValidateServiceMetadata): the
    Consul registry refuses such an entry alone; the other registries hold it."""
    problems = []
    if (pairs := len(entry.meta)) > MAX_META_PAIRS:
        problems.append(
            f"the entry needs {pairs} meta pairs (capsync's keys + one per non-empty category "
            f"+ flags + metadata); Consul allows at most {MAX_META_PAIRS}"
        )
    for key, value in entry.meta.items():
        if not CONSUL_META_KEY.fullmatch(key):
            problems.append(f"meta key {key!r}: Consul meta keys are [A-Za-z0-9_-] only")
        elif len(key) > MAX_META_KEY:  # ASCII alone (the pattern): a byte per character
            problems.append(f"meta key {key!r}: Consul allows at most {MAX_META_KEY} bytes")
        elif key.startswith("consul-"):
            problems.append(f"meta key {key!r}: Consul reserves the 'consul-' prefix")
        # At most 4 UTF-8 bytes a character: a short value needs no count.
        if len(value) * 4 > MAX_META_VALUE and (size := utf8_len(value)) > MAX_META_VALUE:
            problems.append(
                f"meta {key!r} is {size} bytes (UTF-8); Consul allows at most "
                f"{MAX_META_VALUE} bytes per meta value"
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
    value = raw.decode("utf-8", "ignore")
    return ref if value == ref else value  # the declaration's own copy, not a second


def _declaration_meta(caps: Capabilities) -> dict[str, str]:
    # Interned: a fleet repeats the same few tool lists and flag names in every entry.
    meta = {
        category: sys.intern(",".join(_encode_tool(tool) for tool in tools))
        for category, tools in caps.tools.items()
    }
    meta.update(
        {
            sys.intern(FLAG_PREFIX + name): "true" if on else "false"
            for name, on in caps.flags.items()
        }
    )
    meta.update(caps.metadata)
    return meta


def _term_tags(caps: Capabilities, now: int) -> tuple[str, ...]:
    permitted = [
        f"perm:{category}:{permission}"
        for category in caps.tools
        for permission in PERMISSIONS
        if caps.has_required_permissions(category, permission)
    ]
    tools = list(caps.iter_tools())
    expired = {f"expired:{t.tool_name}" for t in tools if t.expiration.expired(now)}
    revoked = {f"revoked:{t.tool_name}" for t in tools if t.expiration.revoked}
    return (*permitted, *sorted(expired), *sorted(revoked))


def _term_meta(caps: Capabilities, now: int, document_key: str) -> dict[str, str]:
    meta = {VERIFIED: "true" if caps.verify_all_capabilities(now) else "false"}
    upcoming = [
        t.expiration.expires_at
        for t in caps.iter_tools()
        if t.expiration.live(now) and t.expiration.expires_at < NEVER_EXPIRES
    ]
    if upcoming:
        meta[NEXT_EXPIRY] = str(min(upcoming))
    meta[DOCUMENT] = document_key
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


def _digest(fields: list[object]) -> str:
    return hashlib.sha256(_CANONICAL.encode(fields).encode()).hexdigest()[:32]


# json.dumps(fields, separators=(",", ":")), without building an encoder per entry.
_CANONICAL = json.JSONEncoder(separators=(",", ":"))


def reserved_reason(key: str) -> str:
    """Why a metadata key may not be used (in every registry: each keeps the entry's
    meta beside the declaration), or "" when it may."""
    if key not in RESERVED_KEYS and not key.startswith(RESERVED_PREFIXES):
        return ""
    return (
        f"key {key!r} is reserved by the registry encoding (reserved: "
        f"{', '.join(sorted(RESERVED_KEYS))}, and the prefixes 'capsync-' and 'flag-')"
    )
