"""GET /v1/health/service/:service (agent/health_endpoint.go, HealthServiceNodes) and
GET /v1/health/node/:node (HealthNodeChecks) and GET /v1/health/checks/:service
(HealthServiceChecks).

Each instance with its node and every check that bears on it (the node's own checks and
the service's), in the catalog's order. ``passing`` keeps only instances all of whose
checks pass (none at all counts as passing); ``tag``, ``node-meta`` and ``filter`` narrow
as on the catalog; Checks and the list are never null. The index is the service's own,
which its checks move too, so a blocking query wakes on a health change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import filter_fields
from .catalog import _compile, _meta_filter, _named, _node_ok
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
from .records import Service
from .state import Store, Tables

PREFIX = "/v1/health/service/"
NODE_PREFIX = "/v1/health/node/"
CHECKS_PREFIX = "/v1/health/checks/"
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def _passing_only(req: Request) -> bool:
    """getBoolQueryParam: absent is false, an empty value true, else strconv.ParseBool."""
    if not req.has("passing"):
        return False
    value = req.arg("passing")
    if value == "" or value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise APIError(400, "Invalid value for ?passing")


def _checks(t: Tables, svc: Service) -> list[dict[str, Any]]:
    node = svc.node.casefold()
    found = [
        check
        for (owner, _), check in t.checks.items()
        if owner == node and check.service_id.casefold() in ("", svc.id.casefold())
    ]
    return [check.to_json() for check in sorted(found, key=lambda c: c.check_id.casefold())]


def service_health(store: Store, acl: Acl, req: Request) -> Response:
    check_scope(req, store.datacenter)
    query = parse_query(req)
    wanted, tags = _meta_filter(req), [tag.casefold() for tag in req.query.get("tag", [])]
    passing_only = _passing_only(req)
    name = _named(req, PREFIX, "service")
    authz = resolve_token(acl, req)
    keep = _compile(req, filter_fields.CHECK_SERVICE_NODE)

    def run() -> tuple[int, list[dict[str, Any]]]:
        t = store.tables
        instances = t.instances(name)
        rows = []
        for svc in instances:
            node = t.node(svc.node)
            have = {tag.casefold() for tag in svc.tags or []}
            if node is None or not _node_ok(node, wanted) or not all(f in have for f in tags):
                continue
            row = {
                "Node": node.to_json(),
                "Service": svc.node_service_json(normalise=True),
                "Checks": _checks(t, svc),
            }
            if passing_only and any(c["Status"] != "passing" for c in row["Checks"]):
                continue
            if keep(row):
                rows.append(row)
        return t.service_index(name, bool(instances)), [] if authz.anonymous else rows

    index, rows = blocking(store, query, run)
    return json_response(req, rows, meta_headers(index, query))


def node_checks(store: Store, acl: Acl, req: Request) -> Response:
    """Every check registered on the node, by check id; a node that does not exist (or
    has no checks) answers ``[]``, never null. The index is the checks table's; an
    anonymous token sees none (and is told so by the filtered header when there were
    some)."""
    name = _named(req, NODE_PREFIX, "node").casefold()
    return _checks_of(store, acl, req, lambda t, node, check: node == name)


def service_checks(store: Store, acl: Acl, req: Request) -> Response:
    """Every check of the service's instances (service checks, not node checks), by
    node then check id; a missing service answers ``[]``."""
    name = _named(req, CHECKS_PREFIX, "service").casefold()

    def of_service(t: Tables, node: str, check: Any) -> bool:
        svc = t.services.get((node, check.service_id.casefold())) if check.service_id else None
        return svc is not None and svc.name.casefold() == name

    return _checks_of(store, acl, req, of_service)


def _checks_of(
    store: Store, acl: Acl, req: Request, wanted: Callable[[Tables, str, Any], bool]
) -> Response:
    check_scope(req, store.datacenter)
    query = parse_query(req)
    authz = resolve_token(acl, req)
    keep = _compile(req, filter_fields.HEALTH_CHECK)

    def run() -> tuple[int, tuple[list[dict[str, Any]], bool]]:
        t = store.tables
        found = sorted(
            (check for (node, _), check in t.checks.items() if wanted(t, node, check)),
            key=lambda c: (c.node.casefold(), c.check_id.casefold()),
        )
        rows = [row for check in found if keep(row := check.to_json())]
        if authz.anonymous:
            return t.max_index("checks"), ([], bool(rows))
        return t.max_index("checks"), (rows, False)

    index, (rows, filtered) = blocking(store, query, run)
    return json_response(req, rows, meta_headers(index, query, filtered))
