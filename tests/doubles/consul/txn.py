"""PUT /v1/txn (agent/txn_endpoint.go, agent/consul/txn_endpoint.go, state/txn.go).

Flow as in Consul: size and op-count limits (413), strict decode (400), conversion (only the
fields convertOps copies), then either the read-only path (no raft entry, no index header) or
Txn.Apply. Both run preCheck first (validation, ACLs, lock-delay) and answer 409 with only
those errors if any; otherwise every op runs against one private copy of the tables, each
failing op is reported, and the copy is committed only when none failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import kv
from .catalog import check_from, service_from
from .gojson import DecodeError, decode_body, go_quote
from .http_util import Acl, APIError, Authz, Request, Response, encode, resolve_token
from .kv_http import KV_MAX_VALUE_SIZE
from .records import Check, KVEntry, Node, Service
from .schemas import TXN_OPS
from .state import FSMError, Store, Tables, Tx
from .validation import node_pre_apply, service_pre_apply

TXN_MAX_REQ_LEN = 512 * 1024
_DOC = "https://developer.hashicorp.com/docs/agent/config/config-files#txn_max_req_len"
_READ_META = {
    "Index": 0,
    "LastContact": 0,
    "KnownLeader": True,
    "ConsistencyLevel": "",
    "NotModified": False,
    "Backend": 0,
    "ResultsFilteredByACLs": False,
}


class _OpFailed(Exception):
    """Collects every failing op of a transaction so the store discards the whole write."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("transaction failed")
        self.errors = errors


def _convert(raw_ops: list[Any], datacenter: str) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """convertOps: the first of KV/Node/Service/Check in each element, and the write count."""
    ops: list[tuple[str, dict[str, Any]]] = []
    writes = 0
    for raw in raw_ops:
        present = [k for k in ("KV", "Node", "Service", "Check") if (raw or {}).get(k) is not None]
        kind = present[0] if present else None
        if kind is None:
            continue
        op = dict(raw[kind])
        verb = op.get("Verb", "")
        if kind == "KV":
            value = op.get("Value") or b""
            if len(value) > KV_MAX_VALUE_SIZE:
                raise APIError(
                    413,
                    f"Value for key {go_quote(op.get('Key', ''))} is too large "
                    f"({len(value)} > {KV_MAX_VALUE_SIZE} bytes)",
                )
            writes += verb in kv.WRITE_VERBS
        else:
            writes += verb != "get"
        if kind != "KV":
            op[kind] = dict(op.get(kind) or {})
        if kind == "Node":
            op["Node"]["Datacenter"] = op["Node"].get("Datacenter") or datacenter
        if kind == "Service":
            for dropped in ("TaggedAddresses", "SocketPath", "Connect", "Locality"):
                op["Service"].pop(dropped, None)
        ops.append((kind, op))
    return ops, writes


def _pre_check(
    store: Store, authz: Authz, ops: list[tuple[str, dict[str, Any]]]
) -> list[str | None]:
    """Txn.preCheck: one verdict per op (None when the op may run)."""
    verdicts: list[str | None] = []
    for kind, op in ops:
        verb = op.get("Verb", "")
        reason: str | None = None
        if kind == "KV":
            key = op.get("Key", "")
            if not key and verb != "delete-tree":
                reason = "Must provide key"
            elif verb in ("check-session", "check-index"):
                reason = authz.denial("key:read", key)
            elif verb not in ("get", "get-tree", "get-or-empty"):
                reason = authz.denial("key:write", key)
            if reason is None and verb == "lock" and store.lock_delayed(key):
                reason = f"failed to lock key {go_quote(key)} due to lock delay"
        elif verb not in ("get", "set", "cas", "delete", "delete-cas"):
            reason = f"unknown {kind.lower()} operation: {verb}"
        elif verb != "get" and kind == "Node":
            node = op["Node"]
            reason = node_pre_apply(node.get("Node", ""), node.get("ID", ""))
            reason = reason or authz.denial("node:write", node.get("Node", ""))
        elif verb != "get" and kind == "Service":
            reason = service_pre_apply(op["Service"])
            reason = reason or authz.denial("service:write", op["Service"].get("Service", ""))
        elif verb != "get" and kind == "Check":
            check = op["Check"]
            check["CheckID"] = check.get("CheckID") or check.get("Name", "")
            if check.get("ServiceID"):
                reason = authz.denial("service:write", check.get("ServiceName", ""))
            else:
                reason = authz.denial("node:write", check.get("Node", ""))
        verdicts.append(reason)
    return verdicts


def _stale(index: int, existing: Node | Service | Check | None) -> bool:
    """The CAS rule of every store verb: index 0 creates only, else it must be current."""
    if index == 0:
        return existing is not None
    return existing is None or existing.modify_index != index


def _kv(tx: Tx, op: dict[str, Any]) -> list[dict[str, Any]]:
    verb, key = op.get("Verb", ""), op.get("Key", "")
    entry = KVEntry(
        key,
        op.get("Value"),
        op.get("Flags", 0),
        op.get("Session", ""),
        modify_index=op.get("Index", 0),
    )
    quoted = go_quote(key)
    t = tx.t
    found: KVEntry | None = None
    if verb in ("get", "get-or-empty"):
        found = t.kvs.get(key) or (entry if verb == "get-or-empty" else None)
        if found is None:
            raise FSMError(f"key {quoted} doesn't exist")
        return [{"KV": found.to_json()}]
    if verb == "get-tree":
        return [{"KV": e.to_json()} for e in kv.listing(t, key)[1]]
    stale = {
        "cas": f"failed to set key {quoted}, index is stale",
        "lock": f"failed to lock key {quoted}, lock is already held",
        "unlock": f"failed to unlock key {quoted}, lock isn't held, or is held by another session",
    }
    if verb == "set":
        found = tx.set_key(entry, update_session=False)
    elif verb in stale:
        found = {"cas": kv.cas, "lock": kv.lock, "unlock": kv.unlock}[verb](tx, entry)
        if found is None:
            raise FSMError(stale[verb])
    elif verb == "delete":
        tx.delete_key(key)
    elif verb == "delete-cas":
        if not kv.delete_cas(tx, key, entry.modify_index):
            raise FSMError(f"failed to delete key {quoted}, index is stale")
    elif verb == "delete-tree":
        kv.delete_tree(tx, key)
    elif verb == "check-session":
        found = kv.check_session(t, key, entry.session)
    elif verb == "check-index":
        found = kv.check_index(t, key, entry.modify_index)
    elif verb == "check-not-exists":
        if key in t.kvs:
            raise FSMError(f"key {quoted} exists")
    else:
        raise FSMError(f"unknown KV verb {go_quote(verb)}")
    return [{"KV": found.to_json(with_value=False)}] if found else []


def _node(tx: Tx, op: dict[str, Any]) -> list[dict[str, Any]]:
    verb, spec = op.get("Verb", ""), op["Node"]
    name, node_id = spec.get("Node", ""), spec.get("ID", "")

    def lookup() -> Node | None:
        if node_id:
            return next(
                (n for n in tx.t.nodes.values() if n.id.casefold() == node_id.casefold()), None
            )
        return tx.t.node(name)

    existing = lookup()
    wanted = Node(
        node_id,
        name,
        spec.get("Address", ""),
        spec["Datacenter"],
        spec.get("TaggedAddresses"),
        spec.get("Meta"),
    )

    def put() -> Node | None:
        tx.ensure_node(wanted)
        return lookup()

    record = _catalog_verb(
        verb,
        f"node {go_quote(name)}",
        existing,
        spec.get("ModifyIndex", 0),
        put,
        lambda: tx.delete_node(name),
    )
    return [{"Node": record.to_json()}] if isinstance(record, Node) else []


def _service(tx: Tx, op: dict[str, Any]) -> list[dict[str, Any]]:
    verb, node, spec = op.get("Verb", ""), op.get("Node", ""), op["Service"]
    service_id = spec.get("ID", "")
    record = _catalog_verb(
        verb,
        f"service {go_quote(service_id)} on node {go_quote(node)}",
        tx.t.services.get((node.casefold(), service_id.casefold())),
        spec.get("ModifyIndex", 0),
        lambda: tx.ensure_service(node, service_from(spec, node)),
        lambda: tx.delete_service(node, service_id),
    )
    return (
        [{"Service": record.node_service_json(normalise=False)}]
        if isinstance(record, Service)
        else []
    )


def _check(tx: Tx, op: dict[str, Any]) -> list[dict[str, Any]]:
    verb, spec = op.get("Verb", ""), op["Check"]
    node, check_id = spec.get("Node", ""), spec.get("CheckID", "")
    record = _catalog_verb(
        verb,
        f"check {go_quote(check_id)} on node {go_quote(node)}",
        tx.t.checks.get((node.casefold(), check_id.casefold())),
        spec.get("ModifyIndex", 0),
        lambda: tx.ensure_check(check_from(spec, node)),
        lambda: tx.delete_check(node, check_id),
    )
    return [{"Check": record.to_json()}] if isinstance(record, Check) else []


def _catalog_verb(
    verb: str,
    where: str,
    existing: Node | Service | Check | None,
    index: int,
    put: Callable[[], Node | Service | Check | None],
    remove: Callable[[], None],
) -> Node | Service | Check | None:
    """The verbs Node, Service and Check ops share (state/txn.go): get, set, cas, delete,
    delete-cas. Returns the record to report; None after a delete (no result entry)."""
    if verb == "get":
        if existing is None:
            raise FSMError(f"{where} doesn't exist")
        return existing
    if verb in ("set", "cas"):
        if verb == "cas" and _stale(index, existing):
            raise FSMError(f"failed to set {where}, index is stale")
        return put()
    if verb == "delete-cas" and (existing is None or existing.modify_index != index):
        raise FSMError(f"failed to delete {where}, index is stale")
    remove()
    return None


_DISPATCH = {"KV": _kv, "Node": _node, "Service": _service, "Check": _check}


def _run(tx: Tx, ops: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """txnDispatch: every op runs (later ones see earlier ones); all failures are reported."""
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for position, (kind, op) in enumerate(ops):
        try:
            results.extend(_DISPATCH[kind](tx, op))
        except FSMError as exc:
            errors.append({"OpIndex": position, "What": str(exc)})
    if errors:
        raise _OpFailed(errors)
    return results


def _check_size(req: Request) -> None:
    """convertOps: a declared Content-Length over txn_max_req_len is refused before reading
    and named in the text; a body without one (chunked) is cut off by http.MaxBytesReader
    while decoding, and the text cannot give its size."""
    if len(req.body) <= TXN_MAX_REQ_LEN:
        return
    declared = req.headers.get("Content-Length")
    size = f"({declared} bytes)" if declared is not None else ""
    raise APIError(
        413, f"Request body{size} too large, max size: {TXN_MAX_REQ_LEN} bytes. See {_DOC}."
    )


def handle(store: Store, acl: Acl, max_ops: int, req: Request) -> Response:
    _check_size(req)
    try:
        raw_ops = decode_body(req.body, TXN_OPS) or []
    except DecodeError as exc:
        raise APIError(400, f"Failed to parse body: {exc}") from None
    if len(raw_ops) > max_ops:
        raise APIError(
            413, f"Transaction contains too many operations ({len(raw_ops)} > {max_ops})"
        )
    ops, writes = _convert(raw_ops, store.datacenter)
    if req.arg("dc") and req.arg("dc") != store.datacenter:
        raise APIError(500, "No path to datacenter")
    authz = resolve_token(acl, req)
    extra = {} if writes else _READ_META
    headers = {} if writes else {"X-Consul-LastContact": "0", "X-Consul-KnownLeader": "true"}
    verdicts = _pre_check(store, authz, ops)
    errors = [{"OpIndex": i, "What": why} for i, why in enumerate(verdicts) if why]
    if not errors:
        try:
            if writes:
                results = store.write(lambda tx: _run(tx, ops))
            else:
                with store.lock:
                    results = _run(Tx(Tables.copy(store.tables), 0, store.clock()), ops)
        except _OpFailed as failed:
            errors = failed.errors
    if errors:
        body = {"Results": None, "Errors": errors, **extra}
        headers["Content-Type"] = "application/json"
        return Response(409, encode(req, body), headers)
    visible = [] if authz.anonymous else results
    body = {"Results": visible, "Errors": None, **extra}
    return Response(200, encode(req, body), {"Content-Type": "application/json", **headers})
