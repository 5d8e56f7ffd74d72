"""A parser for go-bexpr expressions that follows its PEG grammar (grammar.peg).

Alternatives are tried in the grammar's order, so acceptance matches go-bexpr's: a
double-quoted string runs to the next `"` and is unquoted with Go's rules (so `\\"` cannot
occur; backticks can hold quotes), bare words and numbers are values, and `not`, `and`, `or`,
`in`, `contains`, `is` need whitespace around them. Failures imitate the pigeon parser's
messages: `line:col (offset): rule <name>: <reason>` for the grammar's own errors and
`...: no match found, expected: ...` (the farthest failure) otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .gojson import go_quote

FAIL: Any = object()
_WS = " \t\r\n"
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_DIGITS = "0123456789"

# Operator token sequences: "_" is required whitespace, "_?" optional whitespace.
SELECTOR_VALUE_OPS = {
    "==": ("_?", "==", "_?"),
    "!=": ("_?", "!=", "_?"),
    "in": ("_", "contains", "_"),
    "not in": ("_", "not", "_", "contains", "_"),
    "matches": ("_", "matches", "_"),
    "not matches": ("_", "not", "_", "matches", "_"),
}
SELECTOR_OPS = {
    "is empty": ("_", "is", "_", "empty"),
    "is not empty": ("_", "is", "_", "not", "_", "empty"),
}
VALUE_SELECTOR_OPS = {"in": ("_", "in", "_"), "not in": ("_", "not", "_", "in", "_")}


@dataclass
class Match:
    selector: list[str]
    op: str
    value: str | None
    compiled: Any = None


Expr = Match | tuple[Any, ...]  # ("not", e) | ("and", l, r) | ("or", l, r)


class SyntaxProblem(Exception):
    """The expression does not parse; str() is pigeon's error text."""


def unquote(literal: str) -> str:
    """strconv.Unquote of a double-quoted literal's body; ValueError when Go would refuse."""
    simple = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
    simple["\\"] = "\\"
    widths = {"x": 2, "u": 4, "U": 8}
    out, i = [], 0
    while i < len(literal):
        ch, nxt = literal[i], literal[i + 1 : i + 2]
        if ch == "\n":
            raise ValueError(literal)
        if ch != "\\":
            out.append(ch)
            i += 1
        elif nxt in simple:
            out.append(simple[nxt])
            i += 2
        elif nxt in widths and re.fullmatch(r"[0-9a-fA-F]+", literal[i + 2 : i + 2 + widths[nxt]]):
            if len(literal[i + 2 : i + 2 + widths[nxt]]) != widths[nxt]:
                raise ValueError(literal)
            out.append(chr(int(literal[i + 2 : i + 2 + widths[nxt]], 16)))
            i += 2 + widths[nxt]
        elif re.fullmatch(r"[0-7]{3}", literal[i + 1 : i + 4]):
            out.append(chr(int(literal[i + 1 : i + 4], 8)))
            i += 4
        else:
            raise ValueError(literal)
    return "".join(out)


class Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.pos = 0
        self.fail_pos = 0
        self.expected: list[str] = []
        self.errors: list[str] = []
        self.rules: list[str] = []

    # -- matching primitives, recording the farthest failure like pigeon ------------------
    def _fail(self, want: str) -> None:
        if self.pos > self.fail_pos:
            self.fail_pos, self.expected = self.pos, []
        if self.pos == self.fail_pos:
            self.expected.append(want)

    def lit(self, word: str) -> bool:
        if self.s.startswith(word, self.pos):
            self.pos += len(word)
            return True
        self._fail(go_quote(word))
        return False

    def cls(self, chars: str, label: str) -> bool:
        if self.pos < len(self.s) and self.s[self.pos] in chars:
            self.pos += 1
            return True
        self._fail(label)
        return False

    def many(self, chars: str, label: str) -> None:
        while self.cls(chars, label):
            pass

    def ws(self) -> bool:
        if not self.cls(_WS, "[ \\t\\r\\n]"):
            return False
        self.many(_WS, "[ \\t\\r\\n]")
        return True

    def eof(self) -> bool:
        if self.pos == len(self.s):
            return True
        self._fail("EOF")
        return False

    def tokens(self, spec: tuple[str, ...]) -> bool:
        start = self.pos
        for token in spec:
            if token == "_?":
                self.ws()
            elif not (self.ws() if token == "_" else self.lit(token)):
                self.pos = start
                return False
        return True

    def peek(self, probe: Callable[[], Any]) -> bool:
        """A lookahead: consumes nothing and leaves the failure record alone."""
        saved = (self.pos, self.fail_pos, list(self.expected))
        ok = probe() not in (FAIL, False, None)
        self.pos, self.fail_pos, self.expected = saved
        return ok

    def error(self, message: str, at: int | None = None) -> None:
        text = f"{self.position(self.pos if at is None else at)}"
        text += f": rule {self.rules[-1]}: {message}" if self.rules else f": {message}"
        if text not in self.errors:
            self.errors.append(text)

    def position(self, offset: int) -> str:
        line = self.s.count("\n", 0, offset) + 1
        col = offset - (self.s.rfind("\n", 0, offset) + 1) + 1
        return f"{line}:{col} ({len(self.s[:offset].encode())})"

    def rule(self, name: str, body: Callable[[], Any]) -> Any:
        self.rules.append(name)
        try:
            return body()
        finally:
            self.rules.pop()

    def first_op(self, ops: dict[str, tuple[str, ...]]) -> str | None:
        return next((name for name, spec in ops.items() if self.tokens(spec)), None)

    # -- grammar --------------------------------------------------------------------------
    def parse(self) -> Expr:
        """Input: an optionally parenthesised OrExpression, then end of input."""
        for wrapped in (True, False):
            self.pos = 0
            opening = ("_?", "(", "_?") if wrapped else ("_?",)
            if not self.tokens(opening):
                continue
            expr: Expr = self.or_expr()
            closing = ("_?", ")", "_?") if wrapped else ("_?",)
            if expr is not FAIL and self.tokens(closing) and self.eof() and not self.errors:
                return expr
        if self.errors:
            raise SyntaxProblem("\n".join(self.errors))
        wants = sorted(set(self.expected) - {"EOF"}) + ["EOF"] * ("EOF" in self.expected)
        joined = wants[0] if len(wants) == 1 else ", ".join(wants[:-1]) + " or " + wants[-1]
        raise SyntaxProblem(f"{self.position(self.fail_pos)}: no match found, expected: {joined}")

    def _binary(self, word: str, operand: Callable[[], Any], again: Callable[[], Any]) -> Any:
        left = operand()
        if left is FAIL:
            return FAIL
        mid = self.pos
        if self.tokens(("_", word, "_")):
            right = again()
            if right is not FAIL:
                return (word, left, right)
        self.pos = mid
        return left

    def or_expr(self) -> Any:
        return self._binary("or", self.and_expr, self.or_expr)

    def and_expr(self) -> Any:
        return self._binary("and", self.not_expr, self.and_expr)

    def not_expr(self) -> Any:
        start = self.pos
        if self.tokens(("not", "_")):
            inner = self.not_expr()
            if inner is not FAIL:
                doubled = isinstance(inner, tuple) and inner[0] == "not"
                return inner[1] if doubled else ("not", inner)
        self.pos = start
        return self.rule("grouping", self.grouping)

    def grouping(self) -> Any:
        start = self.pos
        if self.tokens(("(", "_?")):
            inner = self.or_expr()
            if inner is not FAIL and self.tokens(("_?", ")")):
                return inner
        self.pos = start
        found = self.rule("match", self.match)
        if found is not FAIL:
            return found
        self.pos = start
        if self.tokens(("(", "_?")) and self.or_expr() is not FAIL:
            self.ws()
            if not self.peek(lambda: self.lit(")")):
                self.error("Unmatched parentheses")
        self.pos = start
        return FAIL

    def match(self) -> Any:
        start = self.pos
        for ops in (SELECTOR_VALUE_OPS, SELECTOR_OPS):
            self.pos = start
            selector = self.selector()
            op = None if selector is FAIL else self.first_op(ops)
            if op in SELECTOR_OPS:
                return Match(selector, op, None)
            if op is not None:
                value = self.rule("value", self.value)
                if value is not FAIL:
                    return Match(selector, op, value)
        self.pos = start
        value = self.rule("value", self.value)
        op = None if value is FAIL else self.first_op(VALUE_SELECTOR_OPS)
        if op is not None:
            selector = self.selector()
            if selector is not FAIL:
                return Match(selector, op, value)
            self.error("Invalid selector")
        self.pos = start
        return FAIL

    def identifier(self) -> str | None:
        start = self.pos
        if not self.cls(_LETTERS, "[a-zA-Z]"):
            return None
        self.many(_LETTERS + _DIGITS + "_", "[a-zA-Z0-9_]")
        return self.s[start : self.pos]

    def selector(self) -> Any:
        first = self.identifier()
        if first is None:
            return FAIL
        path = [first]
        while True:
            mark = self.pos
            part = self.identifier() if self.lit(".") else None
            if part is None:
                self.pos = mark
                part = self.rule("index", self.index)
            if part is None or part is FAIL:
                self.pos = mark
                return path
            path.append(part)

    def index(self) -> Any:
        start = self.pos
        if self.tokens(("[", "_?")):
            key = self.rule("string", self.string)
            if key is FAIL:
                self.error("Invalid index")
            elif self.tokens(("_?", "]")):
                return key
            else:
                self.error("Unclosed index expression")
        self.pos = start
        return FAIL

    def value(self) -> Any:
        start = self.pos
        selector = self.selector()
        if selector is not FAIL:
            return ".".join(selector)
        self.pos = start
        number = self.rule("number", self.number)
        if number is not FAIL:
            return number
        self.pos = start
        return self.rule("string", self.string)

    def number(self) -> Any:
        start = self.pos
        self.lit("-")
        if not (self.lit("0") or self.cls("123456789", "[1-9]")):
            self.pos = start
            return FAIL
        if self.s[self.pos - 1] != "0":
            self.many(_DIGITS, "[0-9]")
        mark = self.pos
        if self.lit(".") and self.cls(_DIGITS, "[0-9]"):
            self.many(_DIGITS, "[0-9]")
        else:
            self.pos = mark
        if self.peek(lambda: self.ws() or self.eof() or self.lit(")")):
            return self.s[start : self.pos]
        self.error("Invalid number literal")
        self.pos = start
        return FAIL

    def string(self) -> Any:
        start = self.pos
        quote = "`" if self.lit("`") else '"' if self.lit('"') else None
        if quote is None:
            return FAIL
        end = self.s.find(quote, self.pos)
        if end < 0:
            self.pos = len(self.s)
            self.error("Unterminated string literal")
            self.pos = start
            return FAIL
        body = self.s[self.pos : end]
        self.pos = end + 1
        if quote == "`":
            return body.replace("\r", "")
        try:
            return unquote(body)
        except ValueError:
            self.error("invalid syntax", at=start)
            return None
