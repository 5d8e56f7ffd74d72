"""The one way in: the bytes a transport received (and its metadata: a ``ttl`` header or
query parameter) -> a registration command, or every field error at once.

REST, WebSocket text and binary frames, gRPC unary and Session, the RabbitMQ consumer,
`capsync publish` and `capsync validate` all decode here, so a hostile input is refused
the same way whichever way it came in. The rules (README, "Workers that register
themselves"):

- sizes are counted in bytes, before anything is decoded;
- the bytes are strict UTF-8 (never replaced) holding one JSON value: no duplicate keys,
  no ``NaN``/``Infinity``, nesting at most ``MAX_DEPTH`` deep;
- no string (key or value, ids included) holds a lone surrogate or U+0000; each one is
  refused with its field path;
- types are strict everywhere; ``ttl`` is a number of seconds above 0 and at most
  ``max_ttl``, never a boolean or a string (the envelope's and the AMQP header's alike).

It lives in ``discovery`` beside ``schema`` (which it calls for the declaration) because
the RabbitMQ source reads through it too, and the front ends in ``daemon`` depend on it.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from config.errors import DeclarationError
from discovery import schema
from discovery.model import Capabilities

MAX_DEPTH = 32
Action = Literal["register", "update", "unregister"]
_ACTIONS: dict[str, Action] = {
    "Register": "register",
    "Update": "update",
    "Unregister": "unregister",
}
_ENVELOPE = ("action", "capabilities", "ttl")


class InvalidMessage(Exception):
    """The input is not a registration: ``problems`` are (field path, message) pairs;
    ``malformed`` when the bytes were not one JSON value at all (REST answers 400)."""

    def __init__(self, message: str, problems: list[tuple[str, str]], *, malformed: bool = False):
        self.message = message
        self.problems = problems
        self.malformed = malformed
        text = "; ".join(f"{loc}: {msg}" if loc else msg for loc, msg in problems)
        super().__init__(f"{message}: {text}" if text else message)


@dataclass(frozen=True)
class Command:
    """What a worker asked for. ``body`` and ``caps`` are set for register and update
    (the declaration as sent, and validated); ``ttl`` is the lease it asked for, if any."""

    action: Action
    id: str
    body: dict[str, Any] | None = None
    caps: Capabilities | None = None
    ttl: float | None = None


def parse(raw: bytes, *, limit: int) -> Any:
    """One JSON value from ``raw``: at most ``limit`` bytes, strict UTF-8, no duplicate
    keys, no NaN or Infinity (``check`` applies the depth and string rules)."""
    if len(raw) > limit:
        raise InvalidMessage("too large", [("", f"{len(raw)} bytes; at most {limit} bytes")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"not valid UTF-8 (byte {exc.start}: {exc.reason})"
        raise InvalidMessage("malformed JSON", [("", reason)], malformed=True) from None
    try:
        data = json.loads(text, object_pairs_hook=_object, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        reason = f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        raise InvalidMessage("malformed JSON", [("", reason)], malformed=True) from None
    except RecursionError:
        reason = f"malformed JSON: {_too_deep()}"
        raise InvalidMessage("malformed JSON", [("", reason)], malformed=True) from None
    except ValueError as exc:  # duplicate keys, NaN, a number too long to convert
        reason = "a number is too long" if "digits" in str(exc) else str(exc)
        reason = f"malformed JSON: {reason}"
        raise InvalidMessage("malformed JSON", [("", reason)], malformed=True) from None
    return data


def check(data: Any) -> None:
    """The depth and string rules, on parsed JSON or a gRPC message alike: InvalidMessage with
    every field path that breaks them (the depth first: the string walk then stays
    shallow)."""
    if (deep := _deeper_than(data, (), MAX_DEPTH)) is not None:
        raise InvalidMessage("invalid input", [(schema.format_loc(deep), _too_deep())])
    if problems := list(schema.text_problems(data, ())):
        raise InvalidMessage("invalid input", problems)


def ttl(value: Any, *, field: str, max_ttl: float) -> float | None:
    """A lease in seconds: a number above 0 and at most ``max_ttl``; None when absent."""
    if value is None:
        return None
    if isinstance(value, Decimal):  # an AMQP header's decimal
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        found = "a boolean" if isinstance(value, bool) else f"a {type(value).__name__}"
        raise InvalidMessage("invalid ttl", [(field, f"must be a number of seconds, not {found}")])
    if not (math.isfinite(value) and 0 < value <= max_ttl):
        raise InvalidMessage(
            "invalid ttl",
            [(field, f"must be a number of seconds above 0 and at most {max_ttl:g}")],
        )
    return float(value)


def ttl_text(text: str | None, *, field: str, max_ttl: float) -> float | None:
    """A lease written as text (a query parameter, a CLI flag): a JSON number."""
    if text is None:
        return None
    try:
        value = json.loads(text, parse_constant=_constant)
    except ValueError:
        value = text
    return ttl(value, field=field, max_ttl=max_ttl)


def read(
    raw: bytes, *, limit: int, max_ttl: float, envelope: bool | None, ttl_meta: Any = None
) -> Command:
    """Bytes -> a command. ``envelope``: True when the input is always the WebSocket's
    ``{"action", "capabilities", "ttl"}``, False when it is always a declaration, None
    when either (the RabbitMQ queue: an object with ``action`` is an envelope).
    ``ttl_meta`` is the transport's own lease (a header, a query parameter), already a
    value."""
    return command(parse(raw, limit=limit), max_ttl=max_ttl, envelope=envelope, ttl_meta=ttl_meta)


def command(data: Any, *, max_ttl: float, envelope: bool | None, ttl_meta: Any = None) -> Command:
    """A decoded object -> a command (see ``read``)."""
    check(data)
    if envelope is None:
        envelope = isinstance(data, dict) and "action" in data
    if not envelope:
        lease = ttl(ttl_meta, field="ttl", max_ttl=max_ttl)
        caps = _declaration(data, "")
        return Command("register", caps.id, data, caps, lease)
    if not isinstance(data, dict):
        raise InvalidMessage(
            "invalid message", [("", f"must be a JSON object, not {_json_type(data)}")]
        )
    problems = [
        (key, "unknown field; expected action, capabilities, ttl")
        for key in data
        if key not in _ENVELOPE
    ]
    problems += [(key, "required") for key in ("action", "capabilities") if key not in data]
    if problems:
        raise InvalidMessage("invalid message", problems)
    action = data["action"]
    if not isinstance(action, str) or action not in _ACTIONS:
        raise InvalidMessage(
            "invalid message", [("action", "must be Register, Update or Unregister")]
        )
    body = data["capabilities"]
    if not isinstance(body, dict):
        raise InvalidMessage(
            "invalid message", [("capabilities", f"must be an object, not {_json_type(body)}")]
        )
    lease = ttl(data.get("ttl", ttl_meta), field="ttl", max_ttl=max_ttl)
    if _ACTIONS[action] == "unregister":
        worker_id = body.get("id")
        if not isinstance(worker_id, str) or not worker_id:
            raise InvalidMessage(
                "invalid message", [("capabilities.id", "must be a worker id (a string)")]
            )
        return Command("unregister", worker_id)
    caps = _declaration(body, "capabilities")
    return Command(_ACTIONS[action], caps.id, body, caps, lease)


def _declaration(data: Any, prefix: str) -> Capabilities:
    try:
        return schema.validate(data, ref="intake")
    except DeclarationError as exc:
        problems = [(_join(prefix, loc), msg) for loc, msg in exc.problems]
        raise InvalidMessage("invalid declaration", problems) from None


def _deeper_than(data: Any, loc: tuple[int | str, ...], depth: int) -> tuple[int | str, ...] | None:
    """The path of the first value nested more than ``depth`` levels below ``loc``."""
    for key, value in schema.children(data):
        if depth == 0:
            return (*loc, key)
        if (found := _deeper_than(value, (*loc, key), depth - 1)) is not None:
            return found
    return None


def _too_deep() -> str:
    return f"nested more than {MAX_DEPTH} levels deep"


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        duplicate = next(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        raise ValueError(f"duplicate key {duplicate!r}")
    return out


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _join(prefix: str, loc: str) -> str:
    return f"{prefix}.{loc}".strip(".") if prefix and loc else prefix or loc
