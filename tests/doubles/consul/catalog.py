"""/v1/catalog endpoints: register, deregister and the reads.

Order of checks and texts follow agent/catalog_endpoint.go (HTTP) and
agent/consul/catalog_endpoint.go (Register, Deregister, vetRegisterWithACL, reads), with the
state-store work in state.Tx (ensureRegistrationTxn's `failed inserting ...` wrapping here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import filter_fields
from .filter import FilterError, compile_filter
from .gojson import DecodeError, decode_body
from .http_util import (
    Acl,
    APIError,
    Authz,
    Request,
    Response,
    blocking,
    check_scope,
    json_response,
    meta_headers,
    parse_query,
    resolve_token,
)
from .records import Check, Node, Service
from .schemas import DEREGISTER_REQUEST, REGISTER_REQUEST
from .state import FSMError, Store, Tables, Tx
from .validation import node_pre_apply, service_pre_apply

Predicate = Callable[[dict[str, Any]], bool]
MIN_UUID_LOOKUP_LEN = 2  # state/catalog.go minUUIDLookupLen


def service_from(spec: dict[str, Any], node: str) -> Service:
    """A NodeService from its decoded JSON, Weights as NodeService.ToServiceNode stores them."""
    return Service(
        node=node,
        id=spec.get("ID", ""),
        name=spec.get("Service", ""),
        kind=spec.get("Kind", ""),
        tags=spec.get("Tags"),
        address=spec.get("Address", ""),
        tagged_addresses=spec.get("TaggedAddresses"),
        meta=spec.get("Meta"),
        port=spec.get("Port", 0),
        socket_path=spec.get("SocketPath", ""),
        weights=stored_weights(spec.get("Weights")),
        enable_tag_override=spec.get("EnableTagOverride", False),
        proxy=spec.get("Proxy"),
        connect=spec.get("Connect"),
        locality=spec.get("Locality"),
    )


def stored_weights(given: dict[str, int] | None) -> dict[str, int]:
    """ToServiceNode (agent/structs/structs.go): weights that are absent, or that fail
    ValidateWeights (Passing >= 1, Warning >= 0, both <= 65535), are stored as {1, 1}. A txn
    Service op always carries them (convertOps copies an omitted one as {0, 0}), so an
    omitted Weights ends up {1, 1} there too."""
    passing = (given or {}).get("Passing", 0)
    warning = (given or {}).get("Warning", 0)
    if given is None or passing < 1 or warning < 0 or max(passing, warning) > 65535:
        return {"Passing": 1, "Warning": 1}
    return {"Passing": passing, "Warning": warning}


def check_from(spec: dict[str, Any], node: str) -> Check:
    """checkPreApply: CheckID defaults to the name; ensureCheckTxn: empty status is critical."""
    return Check(
        node=spec.get("Node") or node,
        check_id=spec.get("CheckID") or spec.get("Name", ""),
        name=spec.get("Name", ""),
        status=spec.get("Status") or "critical",
        notes=spec.get("Notes", ""),
        output=spec.get("Output", ""),
        service_id=spec.get("ServiceID", ""),
        type=spec.get("Type", ""),
        definition=spec.get("Definition"),
    )


def _decode(req: Request, schema: Any) -> dict[str, Any]:
    try:
        return decode_body(req.body, schema) or {}
    except DecodeError as exc:
        reason = str(exc)
        if reason == 'json: unknown field "Namespace"':  # rewordUnknownEnterpriseFieldError
            reason += " - Namespaces are a Consul Enterprise feature"
        raise APIError(400, f"Request decode failed: {reason}") from None


def _node_from(body: dict[str, Any]) -> Node:
    return Node(
        body.get("ID", ""),
        body["Node"],
        body.get("Address", ""),
        body["Datacenter"],
        body.get("TaggedAddresses"),
        body.get("NodeMeta"),
    )


def _changes_node(existing: Node | None, body: dict[str, Any]) -> bool:
    """RegisterRequest.ChangesNode: creating, or (without SkipNodeUpdate) any difference."""
    if existing is None:
        return True
    return not body.get("SkipNodeUpdate") and not existing.same(_node_from(body))


def _vet_register(store: Store, authz: Authz, body: dict[str, Any], checks: list[Check]) -> None:
    """vetRegisterWithACL, including its checks on which node and service a check is for."""
    name = body["Node"]
    existing = store.tables.node(name)
    on_node = {s.id: s for s in store.tables.services_on(name)} if existing else None
    if _changes_node(existing, body):
        authz.require("node:write", name)
    service = body.get("Service")
    service_id = service.get("ID", "") if service else ""
    if service:
        authz.require("service:write", service.get("Service", ""))
        if on_node and service_id in on_node:
            authz.require("service:write", on_node[service_id].name)
    for check in checks:
        if check.node.casefold() != name.casefold():
            raise APIError(
                500,
                f"Node '{check.node}' for check '{check.check_id}' doesn't "
                f"match register request node '{name}'",
            )
        if not check.service_id:
            authz.require("node:write", name)
        elif check.service_id != service_id:
            other = (on_node or {}).get(check.service_id)
            if other is None:
                raise APIError(
                    500, f"Unknown service ID '{check.service_id}' for check ID '{check.check_id}'"
                )
            authz.require("service:write", other.name)


def register(store: Store, acl: Acl, req: Request) -> Response:
    check_scope(req, store.datacenter)
    body = _decode(req, REGISTER_REQUEST)
    body["Datacenter"] = body.get("Datacenter") or store.datacenter
    if body.get("PeerName"):
        raise APIError(500, "cannot register requests with PeerName in them")
    if body["Datacenter"] != store.datacenter:
        raise APIError(500, "No path to datacenter")
    authz = resolve_token(acl, req)
    name = body["Node"] = body.get("Node", "")
    reason = node_pre_apply(name, body.get("ID", ""))
    if reason:
        raise APIError(500, reason)
    if not body.get("Address") and not body.get("SkipNodeUpdate"):
        raise APIError(500, "Must provide address if SkipNodeUpdate is not set")
    service = body.get("Service")
    if service is not None:
        reason = service_pre_apply(service)
        if reason:
            raise APIError(500, reason)
        if service.get("Service") != "consul":
            authz.require("service:write", service.get("Service", ""))
    specs = ([body["Check"]] if body.get("Check") else []) + [
        c for c in body.get("Checks") or [] if c
    ]
    checks = [check_from(spec, name) for spec in specs]
    with store.lock:
        _vet_register(store, authz, body, checks)

    def apply(tx: Tx) -> None:
        if _changes_node(tx.t.node(name), body):
            _wrapped("failed inserting node", lambda: tx.ensure_node(_node_from(body)))
        if service is not None:
            svc = service_from(service, name)
            _wrapped("failed inserting service", lambda: tx.ensure_service(name, svc))
        _wrapped("failed inserting check", lambda: [tx.ensure_check(c) for c in checks])

    try:
        store.write(apply)
    except FSMError as exc:
        raise APIError(500, str(exc)) from None
    return json_response(req, True)


def _wrapped(what: str, step: Callable[[], object]) -> None:
    try:
        step()
    except FSMError as exc:
        raise FSMError(f"{what}: {exc}") from None


def deregister(store: Store, acl: Acl, req: Request) -> Response:
    check_scope(req, store.datacenter)
    body = _decode(req, DEREGISTER_REQUEST)
    if (body.get("Datacenter") or store.datacenter) != store.datacenter:
        raise APIError(500, "No path to datacenter")
    node, service_id, check_id = (body.get(k, "") for k in ("Node", "ServiceID", "CheckID"))
    if not node:
        raise APIError(500, "Must provide node")
    authz = resolve_token(acl, req)
    if authz.denial("node:write", node):  # vetDeregisterWithACL
        t = store.tables
        if service_id:
            svc = t.services.get((node.casefold(), service_id.casefold()))
            if svc is None:
                raise APIError(500, f"Unknown service ID '{service_id}'")
            authz.require("service:write", svc.name)
        elif check_id:
            chk = t.checks.get((node.casefold(), check_id.casefold()))
            if chk is None:
                raise APIError(500, f"Unknown check ID '{check_id}'")
            authz.require(
                *(("service:write", chk.service_name) if chk.service_id else ("node:write", node))
            )
        else:
            authz.require("node:write", node)
    if service_id:
        store.write(lambda tx: tx.delete_service(node, service_id))
    elif check_id:
        store.write(lambda tx: tx.delete_check(node, check_id))
    else:
        store.write(lambda tx: tx.delete_node(node))
    return json_response(req, True)


def _meta_filter(req: Request) -> dict[str, str]:
    """parseMetaFilter: every `node-meta=key:value` must match exactly."""
    pairs = (raw.split(":", 1) for raw in req.query.get("node-meta", []))
    return {p[0]: (p[1] if len(p) > 1 else "") for p in pairs}


def _node_ok(node: Node | None, wanted: dict[str, str]) -> bool:
    meta = (node.meta if node else None) or {}
    return node is not None and all(k in meta and meta[k] == v for k, v in wanted.items())


def _compile(req: Request, fields: filter_fields.Field) -> Predicate:
    if not req.arg("filter"):
        return lambda _: True
    try:
        return compile_filter(req.arg("filter"), fields)
    except FilterError as exc:
        raise APIError(500, str(exc)) from None


def _named(req: Request, prefix: str, what: str) -> str:
    name = req.path[len(prefix) :]
    if not name:
        raise APIError(400, f"Missing {what} name")
    return name


def service_nodes(store: Store, acl: Acl, req: Request) -> Response:
    check_scope(req, store.datacenter)
    query = parse_query(req)
    wanted, tags = _meta_filter(req), req.query.get("tag", [])
    name = _named(req, "/v1/catalog/service/", "service")
    authz = resolve_token(acl, req)
    keep = _compile(req, filter_fields.SERVICE_NODE)

    def run() -> tuple[int, list[dict[str, Any]]]:
        t = store.tables
        instances = t.instances(name)
        folded = [tag.casefold() for tag in tags]
        rows = []
        for svc in instances:
            node = t.node(svc.node)
            have = {tag.casefold() for tag in svc.tags or []}
            if node is not None and _node_ok(node, wanted) and all(f in have for f in folded):
                rows.append(svc.service_node_json(node))
        rows = [row for row in rows if keep(row)]
        return t.service_index(name, bool(instances)), rows

    index, rows = blocking(store, query, run)
    filtered = authz.anonymous and bool(rows)
    rows = [] if authz.anonymous else rows
    return json_response(req, rows, meta_headers(index, query, filtered))


def services(store: Store, acl: Acl, req: Request) -> Response:
    check_scope(req, store.datacenter)
    query = parse_query(req)
    wanted = _meta_filter(req)
    authz = resolve_token(acl, req)
    # The filter reads each instance's service-node form; built only when there is one
    # (a blocking query reruns this on every commit).
    keep = _compile(req, filter_fields.SERVICE_NODE) if req.arg("filter") else None
    # state.Services: the services table's index; ServicesByNodeMeta adds the nodes table's.
    tables = ("services", "nodes") if wanted else ("services",)

    def run() -> tuple[int, dict[str, list[str]]]:
        t = store.tables
        names: dict[str, set[str]] = {}
        for svc in sorted(t.services.values(), key=lambda s: s.name):
            node = t.node(svc.node)
            if (
                node is not None
                and _node_ok(node, wanted)
                and (keep is None or keep(svc.service_node_json(node)))
            ):
                names.setdefault(svc.name, set()).update(svc.tags or [])
        listing = {} if authz.anonymous else {k: sorted(v) for k, v in names.items()}
        return t.max_index(*tables), listing

    index, listing = blocking(store, query, run)
    return json_response(req, listing, meta_headers(index, query))


def nodes(store: Store, acl: Acl, req: Request) -> Response:
    check_scope(req, store.datacenter)
    query = parse_query(req)
    wanted = _meta_filter(req)
    keep = _compile(req, filter_fields.NODE)
    authz = resolve_token(acl, req)

    def run() -> tuple[int, list[dict[str, Any]]]:
        t = store.tables
        found = sorted(t.nodes.values(), key=lambda n: n.name.casefold())
        rows = [n.to_json() for n in found if _node_ok(n, wanted) and keep(n.to_json())]
        return t.max_index("nodes"), rows

    index, rows = blocking(store, query, run)
    filtered = authz.anonymous and bool(rows)
    rows = [] if authz.anonymous else rows
    return json_response(req, rows, meta_headers(index, query, filtered))


def _node_read(store: Store, acl: Acl, req: Request, prefix: str, as_list: bool) -> Response:
    """Catalog.NodeServices / NodeServiceList over state.Store.nodeServices: the node by name,
    else by node ID prefix; the map form always has a Services object, the list form
    leaves Services null when the node has none."""
    check_scope(req, store.datacenter)
    query = parse_query(req)
    name = _named(req, prefix, "node")
    keep = _compile(req, filter_fields.NODE_SERVICE)
    authz = resolve_token(acl, req)

    def run() -> tuple[int, tuple[Any, bool]]:
        """The answer, and whether ACLs hid an existing node from the token."""
        t = store.tables
        node = node_by_name_or_id(t, name)
        index = t.max_index("nodes", "services")
        if node is None or authz.anonymous:
            blank = {"Node": None, "Services": None} if as_list else None
            return index, (blank, node is not None)
        found = [s.node_service_json(normalise=True) for s in t.services_on(node.name)]
        found = [s for s in found if keep(s)]
        listed: Any = (found or None) if as_list else {s["ID"]: s for s in found}
        return index, ({"Node": node.to_json(), "Services": listed}, False)

    index, (out, filtered) = blocking(store, query, run)
    return json_response(req, out, meta_headers(index, query, filtered))


def node_by_name_or_id(t: Tables, key: str) -> Node | None:
    """nodeServices (agent/consul/state/catalog.go): the name first; else, for keys of two
    characters or more, the one node whose ID starts with the key. Like memdb's UUID prefix
    index, an odd-length key loses its last character (resizeNodeLookupKey); then
    variableLengthUUIDStringToBytes (state/indexer.go) wants at most 36 characters and 4
    dashes, and hex digits that pair up once the dashes are gone. Two matches are no match."""
    node = t.node(key)
    if node is not None or len(key) < MIN_UUID_LOOKUP_LEN:
        return node
    key = key[:-1] if len(key) % 2 else key
    wanted = key.replace("-", "").lower()
    if len(key) > 36 or key.count("-") > 4 or len(wanted) % 2:
        return None
    if any(c not in "0123456789abcdef" for c in wanted):
        return None
    found = [n for n in t.nodes.values() if n.id.replace("-", "").lower().startswith(wanted)]
    return found[0] if len(found) == 1 else None


def node_services(store: Store, acl: Acl, req: Request) -> Response:
    return _node_read(store, acl, req, "/v1/catalog/node-services/", as_list=True)


def node(store: Store, acl: Acl, req: Request) -> Response:
    return _node_read(store, acl, req, "/v1/catalog/node/", as_list=False)
