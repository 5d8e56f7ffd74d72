"""Consul's `?filter=`: go-bexpr expressions validated against the result type, then applied.

Parsing is filter_parser's; validation follows go-bexpr's validate.go against the field
configuration of the type Consul filters (filter_fields), with its texts; evaluation follows
evaluate.go (case-sensitive comparisons, `in` as substring on strings, element on lists, key
on maps, a missing map key answering its operator's NotPresentDisposition). Consul prefixes
every error with `Failed to create boolean expression evaluator: ` and answers 500.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .filter_fields import ANY_KEY, Field
from .filter_parser import Expr, Match, Parser, SyntaxProblem
from .gojson import go_quote

PREFIX = "Failed to create boolean expression evaluator: "
_OP_NAMES = {
    "==": "Equal",
    "!=": "Not Equal",
    "in": "In",
    "not in": "Not In",
    "is empty": "Is Empty",
    "is not empty": "Is Not Empty",
    "matches": "Matches",
    "not matches": "Not Matches",
}
_MISSING = {"!=", "not in", "is empty", "not matches"}  # NotPresentDisposition: true


class FilterError(Exception):
    """An expression Consul refuses; str() is the full 500 body."""


def _coerce(raw: str, kind: str | None) -> Any:
    if kind == "int":
        try:
            return int(raw, 0)
        except ValueError:
            raise ValueError(f"strconv.ParseInt: parsing {go_quote(raw)}: invalid syntax") from None
    if kind == "bool":
        if raw in ("1", "t", "T", "TRUE", "true", "True"):
            return True
        if raw in ("0", "f", "F", "FALSE", "false", "False"):
            return False
        raise ValueError(f"strconv.ParseBool: parsing {go_quote(raw)}: invalid syntax")
    return raw


def _validate(expr: Expr, fields: Field) -> None:
    if isinstance(expr, tuple):
        for operand in expr[1:]:
            _validate(operand, fields)
        return
    name = go_quote(".".join(expr.selector))
    config = fields
    for depth, part in enumerate(expr.selector):
        nxt = config.sub.get(part) or config.sub.get(ANY_KEY)
        if nxt is None:
            raise FilterError(
                f"Selector {go_quote('.'.join(expr.selector[: depth + 1]))} is not valid"
            )
        config = nxt
    if expr.op not in config.ops:
        raise FilterError(
            f"Invalid match operator {go_quote(_OP_NAMES[expr.op])} for selector {name}"
        )
    if expr.value is None:
        return
    try:
        expr.compiled = _coerce(expr.value, config.coerce)
    except ValueError as exc:
        raise FilterError(
            f"Failed to coerce value {go_quote(expr.value)} for selector {name}: {exc}"
        ) from None
    if expr.op in ("matches", "not matches"):
        try:
            expr.compiled = re.compile(expr.value)
        except re.error as exc:
            raise FilterError(
                f"Failed to compile regular expression {go_quote(expr.value)}: "
                f"error parsing regexp: {exc}"
            ) from None


def _zero(config: Field) -> Any:
    return (
        {"int": 0, "bool": False}.get(config.coerce or "", "") if config.kind == "scalar" else None
    )


def _match(expr: Match, data: Any, config: Field, depth: int) -> bool:
    if depth == len(expr.selector):
        return _apply(expr, data)
    part = expr.selector[depth]
    nxt = config.sub.get(part) or config.sub[ANY_KEY]
    if config.kind == "list":
        element = replace(config, kind="struct")
        return any(_match(expr, item, element, depth) for item in data or [])
    if config.kind == "map":
        if not data or part not in data:
            return expr.op in _MISSING
        return _match(expr, data[part], nxt, depth + 1)
    value = (data or {}).get(part)
    return _match(expr, _zero(nxt) if value is None else value, nxt, depth + 1)


def _apply(expr: Match, value: Any) -> bool:
    op, want = expr.op, expr.compiled
    if op in ("is empty", "is not empty"):
        return (len(value or ()) == 0) == (op == "is empty")
    if op in ("matches", "not matches"):
        return bool(want.search(value)) == (op == "matches")
    if op in ("in", "not in"):
        found = want in value if isinstance(value, str | list) else want in (value or {})
        return found == (op == "in")
    return bool(value == want) == (op == "==")


def _evaluate(expr: Expr, data: dict[str, Any], fields: Field) -> bool:
    if isinstance(expr, Match):
        return _match(expr, data, fields, 0)
    if expr[0] == "not":
        return not _evaluate(expr[1], data, fields)
    left = _evaluate(expr[1], data, fields)
    if expr[0] == "and":
        return left and _evaluate(expr[2], data, fields)
    return left or _evaluate(expr[2], data, fields)


def compile_filter(text: str, fields: Field) -> Callable[[dict[str, Any]], bool]:
    """A predicate over JSON-shaped results, or FilterError with Consul's full message."""
    try:
        expr = Parser(text).parse()
        _validate(expr, fields)
    except (SyntaxProblem, FilterError) as exc:
        raise FilterError(PREFIX + str(exc)) from None
    return lambda data: _evaluate(expr, data, fields)
