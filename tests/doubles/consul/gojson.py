"""Go semantics the Consul agent applies to request input, reproduced for the double.

Consul decodes request bodies with Go's encoding/json into typed structs (keys match
case-insensitively, unknown keys fail when DisallowUnknownFields is on, type errors carry Go's
wording) and parses durations and integers with Go's rules. Clients see those texts verbatim,
so the double produces the same ones.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DecodeError",
    "ListOf",
    "MapOf",
    "Prim",
    "Raw",
    "Schema",
    "Struct",
    "decode_body",
    "go_quote",
    "parse_duration",
    "parse_uint",
]


class DecodeError(Exception):
    """A body Go's decoder would refuse; the message is Go's error text."""


@dataclass(frozen=True)
class Prim:
    """A Go scalar: string, bool, int, uint64, float64 or []uint8 (base64 in JSON)."""

    go: str


@dataclass(frozen=True)
class Raw:
    """A value Consul decodes with a custom unmarshaller the double does not model."""

    go: str


@dataclass(frozen=True)
class ListOf:
    item: Schema
    go: str = ""  # the Go name of a named slice type, as error messages print it


@dataclass(frozen=True)
class MapOf:
    value: Schema


@dataclass(frozen=True)
class Struct:
    """A Go struct: `fields` in declaration order; `strict` mirrors DisallowUnknownFields."""

    name: str
    pkg: str
    fields: tuple[tuple[str, Schema], ...]
    strict: bool = True

    def field(self, key: str) -> tuple[str, Schema] | None:
        """Go matches a key exactly first, then case-insensitively."""
        for name, schema in self.fields:
            if name == key:
                return name, schema
        folded = key.casefold()
        for name, schema in self.fields:
            if name.casefold() == folded:
                return name, schema
        return None


Schema = Prim | Raw | ListOf | MapOf | Struct


class _Num(str):
    """A JSON number kept as its literal, because Go reports literals like `number 1.5`."""


_INT_RANGES = {"int": (-(2**63), 2**63 - 1), "uint64": (0, 2**64 - 1)}


def go_quote(text: str) -> str:
    """strconv.Quote for the printable texts Consul puts in messages."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif not ch.isprintable():
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x80 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _go_char(ch: str) -> str:
    if ch == "'":
        return "'\\''"
    if ch == '"':
        return "'\"'"
    return "'" + go_quote(ch)[1:-1] + "'"


def _type_name(schema: Schema) -> str:
    if isinstance(schema, Prim | Raw):
        return schema.go
    if isinstance(schema, ListOf):
        return schema.go or "[]" + _type_name(schema.item)
    if isinstance(schema, MapOf):
        return "map[string]" + _type_name(schema.value)
    return f"{schema.pkg}.{schema.name}"


def _json_kind(value: Any) -> str:
    if isinstance(value, _Num):
        return "number"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) and not isinstance(value, _Pairs) else "object"


def _syntax_error(doc: str, exc: json.JSONDecodeError) -> str:
    if exc.pos >= len(doc.rstrip()):
        return "unexpected EOF"
    context = {
        "Expecting property name enclosed in double quotes": (
            "looking for beginning of object key string"
        ),
        "Expecting ':' delimiter": "after object key",
    }.get(exc.msg)
    if context is None and exc.msg == "Expecting ',' delimiter":
        opened = [c for c in doc[: exc.pos] if c in "[]{}"]
        context = (
            "after array element"
            if opened and opened[-1] == "["
            else ("after object key:value pair")
        )
    return (
        f"invalid character {_go_char(doc[exc.pos])} {context or 'looking for beginning of value'}"
    )


def _b64(text: str) -> bytes:
    """base64.StdEncoding as encoding/json applies it to []byte fields (newlines ignored)."""
    cleaned = text.replace("\r", "").replace("\n", "")
    for pos, ch in enumerate(cleaned):
        if not (ch.isascii() and (ch.isalnum() or ch in "+/=")):
            raise DecodeError(f"illegal base64 data at input byte {pos}")
    try:
        return base64.b64decode(cleaned, validate=True)
    except binascii.Error:
        stripped = cleaned.rstrip("=")
        raise DecodeError(f"illegal base64 data at input byte {len(stripped)}") from None


class _Decoder:
    def __init__(self) -> None:
        self.first_error: str | None = None

    def fail(self, message: str) -> None:
        if self.first_error is None:
            self.first_error = message

    def mismatch(self, value: Any, schema: Schema, ctx: tuple[str, str] | None) -> None:
        kind = _json_kind(value)
        if kind == "number" and isinstance(schema, Prim) and schema.go in _INT_RANGES:
            kind = f"number {value}"
        where = f"Go struct field {ctx[0]}.{ctx[1]}" if ctx else "Go value"
        self.fail(f"json: cannot unmarshal {kind} into {where} of type {_type_name(schema)}")

    def value(self, value: Any, schema: Schema, ctx: tuple[str, str] | None) -> Any:
        if value is None:
            return None
        if isinstance(schema, Raw):
            return _plain(value)
        if isinstance(schema, Prim):
            return self.prim(value, schema, ctx)
        if isinstance(schema, ListOf):
            if not isinstance(value, list) or isinstance(value, _Pairs):
                return self.mismatch(value, schema, ctx)
            return [self.value(item, schema.item, ctx) for item in value]
        if isinstance(schema, MapOf):
            if not isinstance(value, _Pairs):
                return self.mismatch(value, schema, ctx)
            out: dict[str, Any] = {}
            for key, item in value:
                sub = (ctx[0], f"{ctx[1]}.{key}") if ctx else None
                out[key] = self.value(item, schema.value, sub)
            return out
        return self.struct(value, schema, ctx)

    def struct(self, value: Any, schema: Struct, ctx: tuple[str, str] | None) -> Any:
        if not isinstance(value, _Pairs):
            return self.mismatch(value, schema, ctx)
        out: dict[str, Any] = {}
        for key, item in value:
            found = schema.field(key)
            if found is None:
                if schema.strict:
                    self.fail(f"json: unknown field {go_quote(key)}")
                continue
            name, sub_schema = found
            path = f"{ctx[1]}.{name}" if ctx else name
            decoded = self.value(item, sub_schema, (schema.name, path))
            if item is None and isinstance(sub_schema, Prim):
                continue  # Go leaves a non-pointer field untouched on null
            out[name] = decoded
        return out

    def prim(self, value: Any, schema: Prim, ctx: tuple[str, str] | None) -> Any:
        go = schema.go
        if go == "string" and isinstance(value, str) and not isinstance(value, _Num):
            return str(value)
        if go == "bool" and isinstance(value, bool):
            return value
        if go == "[]uint8" and isinstance(value, str) and not isinstance(value, _Num):
            try:
                return _b64(value)
            except DecodeError as exc:
                self.fail(str(exc))
                return None
        if isinstance(value, _Num):
            if go == "float64":
                return float(value)
            if go in _INT_RANGES and re.fullmatch(r"-?\d+", value):
                low, high = _INT_RANGES[go]
                if low <= int(value) <= high:
                    return int(value)
        return self.mismatch(value, schema, ctx)


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as ordered pairs: Go applies duplicate keys in order."""


def _plain(value: Any) -> Any:
    if isinstance(value, _Pairs):
        return {k: _plain(v) for k, v in value}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, _Num):
        return float(value) if re.search(r"[.eE]", value) else int(value)
    return value


def decode_body(raw: bytes, schema: Schema) -> Any:
    """Decode the first JSON value of `raw` into `schema` the way json.Decoder.Decode does.

    Returns dicts keyed by the Go field names actually present, so callers can tell an
    omitted field from a zero one. Trailing bytes after the first value are ignored, as Go's
    Decoder does.
    """
    doc = raw.decode("utf-8", errors="replace")
    start = len(doc) - len(doc.lstrip(" \t\r\n"))
    if start == len(doc):
        raise DecodeError("EOF")
    parser = json.JSONDecoder(object_pairs_hook=_Pairs, parse_int=_Num, parse_float=_Num)
    try:
        value, _ = parser.raw_decode(doc, start)
    except json.JSONDecodeError as exc:
        raise DecodeError(_syntax_error(doc, exc)) from None
    decoder = _Decoder()
    result = decoder.value(value, schema, None)
    if decoder.first_error is not None:
        raise DecodeError(decoder.first_error)
    return result


_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_PART = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]*)")


def parse_duration(text: str) -> int:
    """time.ParseDuration: nanoseconds, or ValueError with Go's message."""
    quoted = go_quote(text)
    body = text[1:] if text[:1] in "+-" else text
    sign = -1 if text[:1] == "-" else 1
    if body == "0":
        return 0
    if not body:
        raise ValueError(f"time: invalid duration {quoted}")
    total = 0
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        assert match is not None  # the pattern can match the empty string
        whole, frac, unit = match.groups()
        if not whole and not frac:
            raise ValueError(f"time: invalid duration {quoted}")
        if not unit:
            raise ValueError(f"time: missing unit in duration {quoted}")
        if unit not in _UNITS:
            raise ValueError(f"time: unknown unit {go_quote(unit)} in duration {quoted}")
        scale = _UNITS[unit]
        total += int(whole or "0") * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        pos = match.end()
    if total > 2**63 - 1:
        raise ValueError(f"time: invalid duration {quoted}")
    return sign * total


def parse_uint(text: str) -> int:
    """strconv.ParseUint(text, 10, 64), or ValueError with Go's message."""
    if not re.fullmatch(r"\d+", text):
        raise ValueError(f"strconv.ParseUint: parsing {go_quote(text)}: invalid syntax")
    if int(text) >= 2**64:
        raise ValueError(f"strconv.ParseUint: parsing {go_quote(text)}: value out of range")
    return int(text)
