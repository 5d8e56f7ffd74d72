"""/v1/agent/service/register and /deregister: the local agent's own services.

What the naive approach in the benchmarks calls (python-consul2's agent.service.register).
Texts and codes follow agent/agent_endpoint.go (AgentRegisterService): the body is a
ServiceDefinition (``Name``, not ``Service``); errors are 400 with the reason; the service
lands on the agent's own node, and anti-entropy skips a catalogue write when nothing
changed, so an identical re-registration moves no index.
"""

from __future__ import annotations

from typing import Any

from .catalog import service_from
from .gojson import DecodeError, ListOf, MapOf, Raw, Struct, decode_body
from .http_util import Acl, APIError, Request, Response, json_response, resolve_token
from .schemas import BOOL, INT, STR, STR_MAP, STRINGS, WEIGHTS
from .state import Store, Tx
from .validation import meta_error

SERVICE_DEFINITION = Struct(
    "ServiceDefinition",
    "structs",
    (
        ("Kind", STR),
        ("ID", STR),
        ("Name", STR),
        ("Tags", STRINGS),
        ("Address", STR),
        ("TaggedAddresses", MapOf(Raw("structs.ServiceAddress"))),
        ("Meta", STR_MAP),
        ("Port", INT),
        ("SocketPath", STR),
        ("Weights", WEIGHTS),
        ("EnableTagOverride", BOOL),
        ("Check", Raw("structs.CheckType")),
        ("Checks", ListOf(Raw("structs.CheckType"))),
        ("Token", STR),
        ("Proxy", Raw("structs.ConnectProxyConfig")),
        ("Connect", Raw("structs.ServiceConnect")),
        ("Locality", Raw("structs.Locality")),
    ),
)


def register(store: Store, acl: Acl, req: Request) -> Response:
    try:
        body: dict[str, Any] = decode_body(req.body, SERVICE_DEFINITION) or {}
    except DecodeError as exc:
        raise APIError(400, f"Request decode failed: {exc}") from None
    name = body.get("Name", "")
    if not name:
        raise APIError(400, "Missing service name")
    if reason := meta_error(body.get("Meta")):
        raise APIError(400, f"Invalid Service Meta: {reason}")
    resolve_token(acl, req).require("service:write", name)
    spec = {**body, "Service": name, "ID": body.get("ID") or name}

    def apply(tx: Tx) -> None:
        tx.ensure_service(store.node_name, service_from(spec, store.node_name))

    store.write(apply)
    return Response(200, b"", {})


def deregister(store: Store, acl: Acl, req: Request) -> Response:
    service_id = req.path.removeprefix("/v1/agent/service/deregister/")
    with store.lock:
        known = any(s.id == service_id for s in store.tables.services_on(store.node_name))
    if not known:
        raise APIError(
            404,
            f'Unknown service ID "{service_id}". Ensure that the service ID '
            "is passed, not the service name.",
        )
    store.write(lambda tx: tx.delete_service(store.node_name, service_id))
    return Response(200, b"", {})


def services(store: Store, acl: Acl, req: Request) -> Response:
    with store.lock:
        local = store.tables.services_on(store.node_name)
    return json_response(
        req,
        {
            s.id: {
                "ID": s.id,
                "Service": s.name,
                "Tags": s.tags or [],
                "Meta": s.meta or {},
                "Port": s.port,
                "Address": s.address,
            }
            for s in local
        },
    )
