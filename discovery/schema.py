"""The declaration as it arrives (JSON or YAML), validated into a ``Capabilities``.

Pydantic checks structure and types (strictly: ``"required": "yes"`` is an error, not
true); the naming rules are annotated types so each error carries its exact field path;
rules that span fields (duplicates, reserved keys, Consul's size limits) run afterwards on
the typed result. Every failure becomes a (field path, message) pair naming the rule.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails, PydanticCustomError

from config.errors import DeclarationError
from discovery import codec
from discovery import tool_terms as terms
from discovery.model import CATEGORIES, Capabilities, ToolCapability
from discovery.tool_terms import NEVER_EXPIRES, U64_MAX, Attestation, Expiration, Permissions

MAX_NAME = 128
MAX_ALTERNATIVES = 10
MAX_KEY = 64
MAX_META_VALUE = 512

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_FORBIDDEN_IN_NAME = re.compile(r"[\s,|!:=\x00-\x1f\x7f]")


def tool_key(value: str) -> str:
    """A tool name as declarations store it and queries compare it: trimmed, lower-cased."""
    return value.strip().lower()


def _tool_name(value: str) -> str:
    name = tool_key(value)
    if not name or codec.utf8_len(name) > MAX_NAME:
        raise PydanticCustomError(
            "tool_name", f"tool name must be 1-{MAX_NAME} bytes (UTF-8) after trimming"
        )
    if bad := _FORBIDDEN_IN_NAME.search(name):
        raise PydanticCustomError(
            "tool_name",
            "tool name {name} contains {char}; whitespace, control characters and "
            ", | ! : = are not allowed (they separate entries in the registry encoding)",
            {"name": repr(name), "char": repr(bad.group())},
        )
    return name


def _worker_id(value: str) -> str:
    if not _ID_RE.fullmatch(value):
        raise PydanticCustomError(
            "worker_id",
            "id {id} must be 1-128 characters of [A-Za-z0-9._-] starting with a letter or digit",
            {"id": repr(value)},
        )
    return value


def _key(value: str) -> str:
    if not _KEY_RE.fullmatch(value):
        raise PydanticCustomError(
            "key",
            "key {key} must be 1-{max} characters of [A-Za-z0-9_-] (Consul meta key rules)",
            {"key": repr(value), "max": MAX_KEY},
        )
    return value


def _meta_key(value: str) -> str:
    if reason := codec.reserved_reason(_key(value)):
        raise PydanticCustomError("reserved_key", "{reason}", {"reason": reason})
    return value


ToolName = Annotated[str, AfterValidator(_tool_name)]
WorkerId = Annotated[str, AfterValidator(_worker_id)]
Key = Annotated[str, AfterValidator(_key)]
MetaKey = Annotated[str, AfterValidator(_meta_key)]


def _meta_value(value: str) -> str:
    if (size := codec.utf8_len(value)) > MAX_META_VALUE:
        raise PydanticCustomError(
            "meta_value",
            "metadata values are at most {max} bytes (UTF-8; Consul's limit); this one is "
            "{size} bytes",
            {"max": MAX_META_VALUE, "size": size},
        )
    return value


MetaValue = Annotated[str, AfterValidator(_meta_value)]


class _Strict(BaseModel):
    # snake_case (the seed's JSON) and camelCase (the Kubernetes CRD spec) both bind.
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        strict=True,
        frozen=True,
    )


# The library's per-tool terms (its full serde form). Each part may be left out (the
# minimal form): what is missing takes the library's default, and the expiry one that
# never passes. Integers are the library's u64, and u8 for a CPU percentage up to 100.
U64 = Annotated[int, Field(ge=0, le=U64_MAX)]


class PermissionsIn(_Strict):
    filesystem_access: bool = False
    network_access: bool = False
    process_spawn: bool = False
    env_access: bool = False
    system_access: bool = False
    memory_limit_mb: U64 = terms.DEFAULT_MEMORY_LIMIT_MB
    cpu_limit_percent: Annotated[int, Field(ge=0, le=100)] = terms.DEFAULT_CPU_LIMIT_PERCENT
    timeout_seconds: U64 = terms.DEFAULT_TIMEOUT_SECONDS


class ExpirationIn(_Strict):
    expires_at: U64 = NEVER_EXPIRES
    revoked: bool = False
    revocation_reason: str | None = None
    revoked_at: U64 | None = None
    revoked_by: str | None = None


class AttestationIn(_Strict):
    capability_hash: str
    signature: str
    public_key: str
    timestamp: U64
    algorithm: str
    attester: str


class ToolIn(_Strict):
    tool_name: ToolName
    required: bool = False
    alternatives: Annotated[list[ToolName], Field(max_length=MAX_ALTERNATIVES)] = []
    permissions: PermissionsIn = PermissionsIn()
    expiration: ExpirationIn = ExpirationIn()
    attestation: AttestationIn | None = None
    verified: bool = False


class DeclarationIn(_Strict):
    id: WorkerId | None = None
    static_analysis_tools: list[ToolIn] = []
    security_scanning_tools: list[ToolIn] = []
    dynamic_analysis_tools: list[ToolIn] = []
    fuzzing_tools: list[ToolIn] = []
    test_framework_tools: list[ToolIn] = []
    flags: dict[Key, bool] = {}
    metadata: dict[MetaKey, MetaValue] = {}


_KNOWN_FIELDS = sorted(
    {
        spelling
        for model in (DeclarationIn, ToolIn, PermissionsIn, ExpirationIn, AttestationIn)
        for name in model.model_fields
        for spelling in (name, to_camel(name))
    }
)


def validate(data: Any, *, ref: str, default_id: str | None = None) -> Capabilities:
    """Validate one parsed declaration; raise DeclarationError listing every problem."""
    if not isinstance(data, dict):
        raise DeclarationError(
            ref, [("", f"a declaration must be a JSON object, not {type(data).__name__}")]
        )
    if "id" not in data and default_id is not None:
        data = {"id": default_id, **data}
    if problems := list(_not_unicode(data, ())):
        raise DeclarationError(ref, problems)
    try:
        parsed = DeclarationIn.model_validate(data)
    except ValidationError as exc:
        raise DeclarationError(ref, [_describe(err) for err in exc.errors()]) from None
    if parsed.id is None:
        raise DeclarationError(ref, [("id", "required: this source supplies no default id")])
    caps = Capabilities(
        id=parsed.id,
        tools={
            category: tools
            for category, field_name in CATEGORIES.items()
            if (tools := _tools(getattr(parsed, field_name)))
        },
        flags=dict(parsed.flags),
        metadata=dict(parsed.metadata),
    )
    problems = _duplicate_tools(parsed) + codec.limit_problems(caps)
    if problems:
        raise DeclarationError(ref, problems)
    return caps


def _tools(tools: list[ToolIn]) -> tuple[ToolCapability, ...]:
    return tuple(
        ToolCapability(
            tool_name=tool.tool_name,
            required=tool.required,
            # Keep the declared order (it reads as a preference), drop repeats and self.
            alternatives=tuple(
                dict.fromkeys(alt for alt in tool.alternatives if alt != tool.tool_name)
            ),
            permissions=Permissions(**tool.permissions.model_dump()),
            expiration=Expiration(**tool.expiration.model_dump()),
            attestation=Attestation(**tool.attestation.model_dump()) if tool.attestation else None,
            verified=tool.verified,
        )
        for tool in tools
    )


def _duplicate_tools(parsed: DeclarationIn) -> list[tuple[str, str]]:
    problems = []
    for field_name in CATEGORIES.values():
        seen: dict[str, int] = {}
        for index, tool in enumerate(getattr(parsed, field_name)):
            if tool.tool_name in seen:
                problems.append(
                    (
                        f"{field_name}[{index}].tool_name",
                        f"duplicate tool {tool.tool_name!r} (also at index "
                        f"{seen[tool.tool_name]}); a tool may appear once per category",
                    )
                )
            seen.setdefault(tool.tool_name, index)
    return problems


def _describe(err: ErrorDetails) -> tuple[str, str]:
    loc = format_loc(err["loc"])
    if err["type"] == "extra_forbidden":
        name = str(err["loc"][-1])
        near = difflib.get_close_matches(name, _KNOWN_FIELDS, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        return loc, f"unknown field {name!r}{hint}"
    if err["type"] == "too_long" and err["loc"][-1] == "alternatives":
        return loc, f"at most {MAX_ALTERNATIVES} alternatives per tool"
    return loc, err["msg"]


def _not_unicode(data: Any, loc: tuple[int | str, ...]) -> Iterator[tuple[str, str]]:
    """Every string (key or value) that some registry cannot hold, whatever the source: a
    lone surrogate from a JSON ``\\ud800`` escape cannot be encoded for any registry, and
    U+0000 is refused by PostgreSQL (JSONB, text) and cut short by C clients."""
    if isinstance(data, str):
        if reason := _unstorable(data):
            yield format_loc(loc), reason
        return
    items = (
        data.items()
        if isinstance(data, dict)
        else enumerate(data)
        if isinstance(data, list)
        else ()
    )
    for key, value in items:
        if isinstance(key, str) and (reason := _unstorable(key)):
            printable = key.encode("utf-8", "replace").decode().replace("\x00", "\\0")
            yield f"{format_loc((*loc, printable))} (key)", reason
        yield from _not_unicode(value, (*loc, key))


def _unstorable(text: str) -> str:
    if "\x00" in text:
        return "contains U+0000 (NUL), which registries cannot store (PostgreSQL refuses it)"
    bad = next((c for c in text if "\ud800" <= c <= "\udfff"), None)
    return (
        ""
        if bad is None
        else (f"not valid Unicode: lone surrogate U+{ord(bad):04X} (an unpaired \\u escape)")
    )


def format_loc(loc: tuple[int | str, ...]) -> str:
    """('static_analysis_tools', 0, 'tool_name') -> 'static_analysis_tools[0].tool_name'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += " (key)"
        else:
            out += f".{part}" if out else str(part)
    return out
