"""/v1/kv/<key> (agent/kvs_endpoint.go, agent/consul/kvs_endpoint.go).

PUT answers `true` for a plain set and the store's verdict for cas/acquire/release; lock-delay
is enforced before the write as on the leader. Refusals from the store come back as 500
`raft apply failed: ...`. Reads of a missing key are 404 with an empty body but still carry
the index headers; a single key the token may not read is 403 whether it exists or not
(only recursive and keys listings are filtered).
"""

from __future__ import annotations

from urllib.parse import quote_plus

from . import kv
from .gojson import parse_uint
from .http_util import (
    Acl,
    APIError,
    Query,
    Request,
    Response,
    blocking,
    check_scope,
    json_response,
    meta_headers,
    parse_query,
    resolve_token,
)
from .records import KVEntry
from .state import FSMError, Store, Tx

KV_MAX_VALUE_SIZE = 512 * 1024
_DOC = "https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size"


def _conflict(req: Request, *flags: str) -> None:
    """conflictingFlags: at most one of `flags`, else 400 echoing the sorted query."""
    if sum(req.has(flag) for flag in flags) > 1:
        encoded = "&".join(
            f"{quote_plus(k)}={quote_plus(v)}" for k in sorted(req.query) for v in req.query[k]
        )
        raise APIError(400, f"Conflicting flags: {encoded}\n")


def _uint(req: Request, name: str) -> int:
    try:
        return parse_uint(req.arg(name))
    except ValueError as exc:
        raise APIError(500, str(exc)) from None


def endpoint(store: Store, acl: Acl, req: Request) -> Response:
    check_scope(req, store.datacenter)
    query = parse_query(req)
    key = req.path[len("/v1/kv/") :]
    if req.method == "GET":
        return _get(store, acl, req, query, key)
    if req.method == "PUT":
        return _put(store, acl, req, key)
    return _delete(store, acl, req, key)


def _get(store: Store, acl: Acl, req: Request, query: Query, key: str) -> Response:
    listing = req.has("recurse") or req.has("keys")
    if not listing and not key:
        raise APIError(400, "Missing key name")
    authz = resolve_token(acl, req)
    separator = req.arg("separator") if req.has("separator") else req.arg("seperator")

    def run() -> tuple[int, list[KVEntry] | list[str]]:
        found: list[KVEntry] | list[str]
        t = store.tables
        if not listing:  # KVS.Get: a single key the token may not read is refused
            index, entry = kv.get(t, key)
            authz.require("key:read", key)
            return index, [] if entry is None else [entry]
        index, entries = kv.listing(t, key)
        hidden.append(authz.anonymous and bool(entries))
        entries = [] if authz.anonymous else entries
        found = kv.keys(entries, key, separator) if req.has("keys") else entries
        return index, found

    hidden: list[bool] = []  # the last run's: did ACLs filter the listing?
    index, found = blocking(store, query, run)
    headers = meta_headers(index, query, bool(hidden and hidden[-1]))
    if req.has("keys"):
        if not found and key:
            return Response(404, b"", headers)
        return json_response(req, found, headers)
    if not found:
        return Response(404, b"", headers)
    entries = [e for e in found if isinstance(e, KVEntry)]
    if req.has("raw") and not req.has("recurse"):
        raw_headers = {
            "Content-Type": "text/plain",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
        }
        return Response(200, entries[0].value or b"", {**headers, **raw_headers})
    return json_response(req, [e.to_json() for e in entries], headers)


def _put(store: Store, acl: Acl, req: Request, key: str) -> Response:
    if not key:
        raise APIError(400, "Missing key name")
    _conflict(req, "cas", "acquire", "release")
    flags = _uint(req, "flags") if req.has("flags") else 0
    verb, index, session = "set", 0, ""
    if req.has("cas"):
        verb, index = "cas", _uint(req, "cas")
    if req.has("acquire"):
        verb, session = "lock", req.arg("acquire")
    if req.has("release"):
        verb, session = "unlock", req.arg("release")
    if len(req.body) > KV_MAX_VALUE_SIZE:
        raise APIError(
            413,
            f"Request body({len(req.body)} bytes) too large, max size: {KV_MAX_VALUE_SIZE} "
            f"bytes. See {_DOC}.",
        )
    authz = resolve_token(acl, req)
    authz.require("key:write", key)
    if verb == "lock" and store.lock_delayed(key):
        return json_response(req, False)
    entry = KVEntry(key, req.body or None, flags, session, modify_index=index)

    def apply(tx: Tx) -> bool:
        if verb == "set":
            tx.set_key(entry, update_session=False)
            return True
        step = {"cas": kv.cas, "lock": kv.lock, "unlock": kv.unlock}[verb]
        return step(tx, entry) is not None

    try:
        done = store.write(apply)
    except FSMError as exc:
        raise APIError(500, f"raft apply failed: {exc}") from None
    return json_response(req, done)


def _delete(store: Store, acl: Acl, req: Request, key: str) -> Response:
    _conflict(req, "recurse", "cas")
    recurse = req.has("recurse")
    if not recurse and not key:
        raise APIError(400, "Missing key name")
    index = _uint(req, "cas") if req.has("cas") else None
    authz = resolve_token(acl, req)
    authz.require("key:write", key)
    if index is not None:
        return json_response(req, store.write(lambda tx: kv.delete_cas(tx, key, index)))
    if recurse:
        store.write(lambda tx: kv.delete_tree(tx, key))
    else:
        store.write(lambda tx: tx.delete_key(key))
    return json_response(req, True)
