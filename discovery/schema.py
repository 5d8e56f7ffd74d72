"""The declaration as it arrives (JSON or YAML), validated into a ``Capabilities``.

Pydantic checks structure and types (strictly: ``"required": "yes"`` is an error, not
true); the naming rules are annotated types so each error carries its exact field path;
rules that span fields (duplicates) run afterwards on the typed result. Every failure
becomes a (field path, message) pair naming the rule.

Nothing is rewritten: names, alternatives, flags and metadata are kept exactly as
declared. Only what no registry can hold, or what is plainly broken, is refused here;
what only Consul's encoding forbids (a meta key character, a value over 512 bytes, more
than 64 meta pairs) is refused by the Consul registry alone (``codec.consul_problems``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, TypeVar

import msgspec
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails, PydanticCustomError

from config.errors import DeclarationError
from discovery import codec, shared
from discovery import tool_terms as terms
from discovery.model import CATEGORIES, Capabilities, ToolCapability
from discovery.tool_terms import (
    DEFAULT_EXPIRATION,
    DEFAULT_PERMISSIONS,
    NEVER_EXPIRES,
    U64_MAX,
    Attestation,
    Expiration,
    Permissions,
)

MAX_NAME = 256
MAX_ALTERNATIVES = 10

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _tool_name(value: str) -> str:
    """A tool name is kept exactly as declared (the library compares names exactly, and
    its capability_hash covers them): only what is plainly broken is refused."""
    if not 1 <= len(value) <= MAX_NAME:
        raise PydanticCustomError(
            "tool_name", f"tool name must be 1-{MAX_NAME} characters (the library's limit)"
        )
    if bad := _CONTROL.search(value):
        raise PydanticCustomError(
            "tool_name",
            "tool name {name} contains the control character {char}",
            {"name": repr(value), "char": repr(bad.group())},
        )
    return value


def _worker_id(value: str) -> str:
    if not _ID_RE.fullmatch(value):
        raise PydanticCustomError(
            "worker_id",
            "id {id} must be 1-128 characters of [A-Za-z0-9._-] starting with a letter or digit",
            {"id": repr(value)},
        )
    return value


def _key(value: str) -> str:
    if not value or _CONTROL.search(value):
        raise PydanticCustomError(
            "key",
            "key {key} must be non-empty and without control characters",
            {"key": repr(value)},
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
    metadata: dict[MetaKey, str] = {}


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
    if problems := list(text_problems(data, ())):
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
        flags=shared.flags(parsed.flags),
        metadata=shared.strings(parsed.metadata),
    )
    if problems := _duplicate_tools(parsed):
        raise DeclarationError(ref, problems)
    return caps


def _tools(tools: list[ToolIn]) -> tuple[ToolCapability, ...]:
    # Straight from the validated models' fields (flat: scalars only), no dump round trip;
    # each tool the one object equal to it (a fleet repeats a few tools many times).
    return tuple(
        shared.tool(
            ToolCapability(
                tool_name=shared.text(tool.tool_name),
                required=tool.required,
                alternatives=shared.texts(tool.alternatives),
                permissions=_terms(tool, "permissions", Permissions, DEFAULT_PERMISSIONS),
                expiration=_terms(tool, "expiration", Expiration, DEFAULT_EXPIRATION),
                attestation=Attestation(**vars(tool.attestation)) if tool.attestation else None,
                verified=tool.verified,
            )
        )
        for tool in tools
    )


Terms = TypeVar("Terms", Permissions, Expiration)


def _terms(tool: ToolIn, name: str, kind: type[Terms], default: Terms) -> Terms:
    """The terms most tools declare (none) are one instance, shared by every tool that
    declares them, instead of one per tool of a large fleet."""
    if name not in tool.__pydantic_fields_set__:  # model_fields_set, without its property
        return default
    terms_ = kind(**vars(getattr(tool, name)))
    return default if terms_ == default else terms_


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


def text_problems(data: Any, loc: tuple[int | str, ...]) -> Iterator[tuple[str, str]]:
    """Every string (key or value) that is not text a registry can hold: a lone
    surrogate from a JSON ``\\ud800`` escape cannot be encoded for any registry, and
    U+0000 ends a string in C clients and SQL."""
    if _plain_text(data):
        return iter(())
    return _walk_text(data, loc)


def _plain_text(data: Any) -> bool:
    """True when no string in ``data`` can hold either, found in one pass in C: msgspec
    writes every key and string of dicts and lists as UTF-8, a NUL as ``\\u0000``, and
    refuses a lone surrogate (UTF-8 cannot hold one). False means only "look closer"
    (such an escape, a refusal, or data it cannot write): the walk then finds each
    problem with its path. Five times the json module's speed on a declaration."""
    try:
        text = _PLAIN.encode(data)
    except (TypeError, ValueError, RecursionError, msgspec.EncodeError):
        return False  # UnicodeEncodeError (a lone surrogate) is a ValueError
    return b"\\u0000" not in text


_PLAIN = msgspec.json.Encoder()


def _walk_text(data: Any, loc: tuple[int | str, ...]) -> Iterator[tuple[str, str]]:
    if isinstance(data, str):
        if reason := _not_text(data):
            yield format_loc(loc), reason
        return
    for key, value in children(data):
        if isinstance(key, str) and (reason := _not_text(key)):
            printable = key.encode("utf-8", "replace").decode().replace("\x00", "\\u0000")
            yield f"{format_loc((*loc, printable))} (key)", reason
            continue
        yield from _walk_text(value, (*loc, key))


def children(data: Any) -> Iterable[tuple[Any, Any]]:
    """An object's (key, value) pairs, an array's (index, value) pairs; none otherwise."""
    if isinstance(data, dict):
        return data.items()
    return enumerate(data) if isinstance(data, list) else ()


def _not_text(text: str) -> str:
    if "\x00" in text:
        return "U+0000 (NUL) is not allowed in any string"
    bad = _SURROGATE.search(text)  # in C: a 64 KiB body is read once, not per character
    return (
        ""
        if bad is None
        else (
            f"not valid Unicode: lone surrogate U+{ord(bad.group()):04X} (an unpaired \\u escape)"
        )
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
