"""Request parsing and response building shared by the endpoint modules.

Mirrors agent/http.go: JSON encoding (compact, HTML-escaped, `?pretty` indented), query
metadata headers (an index is never 0), `?wait`/`?index` parsing and the blocking loop of
agent/consul/rpc.go (wait capped at 10m, default 5m, plus up to wait/16 jitter; returns when
the index is strictly greater), token lookup and the ACL decisions the double models.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, TypeVar

from .gojson import go_quote, parse_duration, parse_uint
from .state import Store

T = TypeVar("T")

MAX_QUERY_NS = 600_000_000_000
DEFAULT_QUERY_NS = 300_000_000_000
JITTER_FRACTION = 16
# Its own generator: a test drawing Hypothesis examples while the double serves a blocking
# query must not see the global random state move (Hypothesis refuses that).
_JITTER = random.Random()


class APIError(Exception):
    """An HTTP error answer: plain text, like Consul's handleErr."""

    def __init__(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(body)
        self.status = status
        self.body = body
        self.headers = headers or {}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes

    def arg(self, name: str) -> str:
        """url.Values.Get: the first value, "" when absent."""
        return self.query.get(name, [""])[0]

    def has(self, name: str) -> bool:
        return name in self.query

    def token(self) -> str:
        """?token=, else X-Consul-Token, else `Authorization: Bearer <token>`."""
        if self.arg("token"):
            return self.arg("token")
        if self.headers.get("X-Consul-Token"):
            return str(self.headers["X-Consul-Token"])
        parts = str(self.headers.get("Authorization", "")).split(" ")
        if len(parts) > 1 and parts[0].lower() == "bearer":
            return " ".join(parts[1:]).strip().split(" ")[0]
        return ""


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def encode(req: Request, obj: Any) -> bytes:
    """json.Marshal (or MarshalIndent with four spaces under ?pretty)."""
    if req.has("pretty"):
        text = json.dumps(obj, indent=4, ensure_ascii=False) + "\n"
    else:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(raw, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


def json_response(req: Request, obj: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(200, encode(req, obj), {"Content-Type": "application/json", **(headers or {})})


@dataclass
class Query:
    min_index: int
    wait_ns: int
    consistency: str
    filter: str


def parse_query(req: Request) -> Query:
    """HTTPHandlers.parse: consistency flags, then ?wait, then ?index."""
    stale, consistent = req.has("stale"), req.has("consistent")
    if stale and consistent:
        raise APIError(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
    wait_ns = 0
    if req.arg("wait"):
        try:
            wait_ns = parse_duration(req.arg("wait"))
        except ValueError:
            raise APIError(400, "Invalid wait time") from None
    min_index = 0
    if req.arg("index"):
        try:
            min_index = parse_uint(req.arg("index"))
        except ValueError:
            raise APIError(400, "Invalid index") from None
    level = "stale" if stale else "consistent" if consistent else "leader"
    return Query(min_index, wait_ns, level, req.arg("filter"))


FILTERED_BY_ACLS = "X-Consul-Results-Filtered-By-ACLs"


def meta_headers(index: int, query: Query, filtered: bool = False) -> dict[str, str]:
    """setMeta: an index of 0 is sent as 1 so clients never spin on ?index=0. Since 1.11
    a result ACLs filtered says so (QueryMeta.ResultsFilteredByACLs); absent otherwise."""
    return {
        "X-Consul-Index": str(max(index, 1)),
        "X-Consul-KnownLeader": "true",
        "X-Consul-LastContact": "0",
        "X-Consul-Effective-Consistency": query.consistency,
        "X-Consul-Query-Backend": "blocking-query",
        **({FILTERED_BY_ACLS: "true"} if filtered else {}),
    }


def blocking(store: Store, query: Query, run: Callable[[], tuple[int, T]]) -> tuple[int, T]:
    """blockingQuery: rerun `run` on every commit until its index passes ?index or time's up."""
    with store.lock:
        index, result = run()
        if query.min_index == 0:
            return index, result
        wait_ns = query.wait_ns
        if wait_ns > MAX_QUERY_NS:
            wait_ns = MAX_QUERY_NS
        elif wait_ns <= 0:
            wait_ns = DEFAULT_QUERY_NS
        wait = wait_ns / 1e9
        deadline = time.monotonic() + wait + _JITTER.uniform(0, wait / JITTER_FRACTION)
        while max(index, 1) <= query.min_index and not store.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            store.cond.wait(remaining)
            index, result = run()
        return index, result


def check_scope(req: Request, datacenter: str) -> None:
    """Community-edition refusals of namespaces/partitions, and unknown datacenters."""
    for what, header, param in (
        ("Namespaces", "X-Consul-Namespace", "ns"),
        ("Partitions", "X-Consul-Partition", "partition"),
    ):
        feature = f"{what} are a Consul Enterprise feature"
        if req.headers.get(header):
            raise APIError(400, f"Invalid header: {go_quote(header)} - {feature}")
        if req.arg(param):
            raise APIError(400, f"Invalid query parameter: {go_quote(param)} - {feature}")
    if req.arg("dc") and req.arg("dc") != datacenter:
        raise APIError(500, "No path to datacenter")


@dataclass(frozen=True)
class Authz:
    """The two principals the double models: management (all) and anonymous (deny)."""

    anonymous: bool

    def denial(self, perm: str, resource: str) -> str | None:
        if not self.anonymous:
            return None
        return (
            f"Permission denied: anonymous token lacks permission '{perm}' on {go_quote(resource)}"
        )

    def require(self, perm: str, resource: str) -> None:
        reason = self.denial(perm, resource)
        if reason:
            raise APIError(403, reason)


@dataclass(frozen=True)
class Acl:
    """The agent's ACL settings: `management` is the one token the double knows (None turns
    ACLs off); `default_token` stands in for a request that carries none (acl.tokens.default,
    "" meaning the anonymous token)."""

    management: str | None = None
    default_token: str = ""

    @property
    def enabled(self) -> bool:
        return self.management is not None


def resolve_token(acl: Acl, req: Request) -> Authz:
    """parseTokenWithDefault (agent/http.go): no token in the request means the agent's
    default token. With ACLs off every token is ignored; with them on, unknown tokens are
    refused and the empty token is the anonymous one."""
    token = req.token() or acl.default_token
    if acl.management is None or token == acl.management:
        return Authz(anonymous=False)
    if token == "":
        return Authz(anonymous=True)
    raise APIError(403, "ACL not found")
