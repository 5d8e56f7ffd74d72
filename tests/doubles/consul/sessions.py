"""/v1/session endpoints (agent/session_endpoint.go, agent/consul/session_endpoint.go).

Creation defaults come from the HTTP handler (the agent's node, NodeChecks ["serfHealth"],
LockDelay 15s, release); validation and its texts from Session.Apply, which wraps state-store
refusals as `apply failed: ...`. TTL expiry is the store's timer (2 x TTL after the last
renewal).
"""

from __future__ import annotations

import uuid
from typing import Any

from .gojson import DecodeError, decode_body, parse_duration
from .http_util import (
    Acl,
    APIError,
    Request,
    Response,
    blocking,
    check_scope,
    json_response,
    meta_headers,
    parse_query,
    resolve_token,
)
from .records import Session
from .schemas import SESSION
from .state import FSMError, Store

SESSION_TTL_MIN_NS = 10_000_000_000
SESSION_TTL_MAX_NS = 86_400_000_000_000
_LOCK_DELAY_MIN_THRESHOLD = 1000  # numbers below this are taken as seconds


def _lock_delay(raw: Any) -> int:
    """Session.UnmarshalJSON: a Go duration string, or a number of nanoseconds (or seconds)."""
    if isinstance(raw, str):
        try:
            delay = parse_duration(raw)
        except ValueError as exc:
            raise APIError(400, f"Request decode failed: {exc}") from None
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        delay = int(raw)
    else:
        delay = 0
    return delay * 1_000_000_000 if delay < _LOCK_DELAY_MIN_THRESHOLD else delay


def _ttl_ns(ttl: str) -> int:
    """Session.Apply's TTL check: empty or zero means no timer, else 10s..24h."""
    if ttl == "":
        return 0
    try:
        value = parse_duration(ttl)
    except ValueError as exc:
        raise APIError(500, f"Session TTL '{ttl}' invalid: {exc}") from None
    if value != 0 and not SESSION_TTL_MIN_NS <= value <= SESSION_TTL_MAX_NS:
        raise APIError(500, f"Invalid Session TTL '{value}', must be between [10s=24h0m0s]")
    return value


def create(store: Store, acl: Acl, req: Request) -> Response:
    check_scope(req, store.datacenter)
    body: dict[str, Any] = {}
    if req.body:
        try:
            body = decode_body(req.body, SESSION) or {}
        except DecodeError as exc:
            raise APIError(400, f"Request decode failed: {exc}") from None
    node_checks = body.get("NodeChecks", ["serfHealth"]) if "NodeChecks" in body else ["serfHealth"]
    checks = body.get("Checks") if "Checks" in body else ["serfHealth"]
    if not checks:  # fixupEmptySessionChecks: an explicit empty Checks means no checks
        node_checks = []
    elif checks != ["serfHealth"] and node_checks:
        node_checks = list(dict.fromkeys([*node_checks, *checks]))
    delay = _lock_delay(body["LockDelay"]) if body.get("LockDelay") is not None else 15_000_000_000
    node = body.get("Node", store.node_name)
    if not node:
        raise APIError(500, "Must provide Node")
    authz = resolve_token(acl, req)
    authz.require("session:write", node)
    behavior = body.get("Behavior") or "release"
    if behavior not in ("release", "delete"):
        raise APIError(500, f"Invalid Behavior setting '{behavior}'")
    ttl = body.get("TTL", "")
    ttl_ns = _ttl_ns(ttl)
    session = Session(
        id=str(uuid.uuid4()),
        node=node,
        name=body.get("Name", ""),
        lock_delay=delay,
        behavior=behavior,
        ttl=ttl,
        node_checks=node_checks,
        service_checks=body.get("ServiceChecks"),
    )
    try:
        store.write(lambda tx: tx.create_session(session, ttl_ns))
    except FSMError as exc:
        raise APIError(500, f"apply failed: {exc}") from None
    return json_response(req, {"ID": session.id})


def _session_id(req: Request, prefix: str) -> str:
    session_id = req.path[len(prefix) :]
    if not session_id:
        raise APIError(400, "Missing session")
    return session_id


def renew(store: Store, acl: Acl, req: Request) -> Response:
    check_scope(req, store.datacenter)
    parse_query(req)
    session_id = _session_id(req, "/v1/session/renew/")
    authz = resolve_token(acl, req)
    with store.lock:
        session = store.tables.sessions.get(session_id)
    if session is None:
        raise APIError(404, f"Session id '{session_id}' not found")
    authz.require("session:write", session.node)
    store.renew(session_id)
    return json_response(req, [session.to_json()])


def destroy(store: Store, acl: Acl, req: Request) -> Response:
    check_scope(req, store.datacenter)
    session_id = _session_id(req, "/v1/session/destroy/")
    authz = resolve_token(acl, req)
    with store.lock:
        session = store.tables.sessions.get(session_id)
    if session is not None:
        authz.require("session:write", session.node)
        store.write(lambda tx: tx.destroy_session(session_id))
    return json_response(req, True)


def _listing(store: Store, acl: Acl, req: Request, pick: Any) -> Response:
    check_scope(req, store.datacenter)
    query = parse_query(req)
    authz = resolve_token(acl, req)

    def run() -> tuple[int, list[dict[str, Any]]]:
        t = store.tables
        found = [s.to_json() for s in sorted(t.sessions.values(), key=lambda s: s.id) if pick(s)]
        return t.max_index("sessions"), [] if authz.anonymous else found

    index, found = blocking(store, query, run)
    return json_response(req, found, meta_headers(index, query))


def info(store: Store, acl: Acl, req: Request) -> Response:
    session_id = _session_id(req, "/v1/session/info/")
    return _listing(store, acl, req, lambda s: s.id == session_id)


def listing(store: Store, acl: Acl, req: Request) -> Response:
    return _listing(store, acl, req, lambda s: True)


def node_sessions(store: Store, acl: Acl, req: Request) -> Response:
    node = req.path[len("/v1/session/node/") :]
    if not node:
        raise APIError(400, "Missing node name")
    return _listing(store, acl, req, lambda s: s.node.casefold() == node.casefold())
