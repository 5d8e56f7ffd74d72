"""HTTP plumbing: routing, method checks, error bodies and headers (agent/http.go).

Routing follows Go's ServeMux as Consul registers it: exact patterns, `/`-terminated prefix
patterns, a 301 from `/v1/kv` to `/v1/kv/`, 404 texts for unknown paths, 405 with an
`Allow: OPTIONS,<methods>` header. Errors are plain text; JSON answers are gzip-encoded like
gziphandler when the client accepts it and the body reaches its minimum size.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import agent, catalog, health, kv_http, sessions, txn
from .faults import CONTROL_PATH, FaultError, Faults, parse_fault
from .http_util import Acl, APIError, Request, Response, json_response, resolve_token
from .state import Store

VERSION = "1.21.0"
GZIP_MIN_SIZE = 1400
_TEXT = {"Content-Type": "text/plain; charset=utf-8"}


@dataclass
class Context:
    store: Store
    acl: Acl
    max_txn_ops: int
    faults: Faults
    record: Callable[[str, str], None]  # a request arrived
    finished: Callable[[str, str], None]  # ... and was answered


Handler = Callable[[Context, Request], Response]


def _agent_self(ctx: Context, req: Request) -> Response:
    store = ctx.store
    resolve_token(ctx.acl, req).require("agent:read", store.node_name)
    meta = {"consul-network-segment": "", "consul-version": VERSION}
    return json_response(
        req,
        {
            "Config": {
                "Datacenter": store.datacenter,
                "PrimaryDatacenter": store.datacenter,
                "NodeName": store.node_name,
                "NodeID": store.node_id,
                "Revision": "",
                "Server": True,
                "Version": VERSION,
            },
            "Member": {
                "Name": store.node_name,
                "Addr": "127.0.0.1",
                "Port": 8301,
                "Status": 1,
                "Tags": {"dc": store.datacenter, "role": "consul", "build": VERSION},
            },
            "Stats": {},
            "Meta": meta,
        },
    )


def _plain(fn: Callable[[Store, Acl, Request], Response]) -> Handler:
    return lambda ctx, req: fn(ctx.store, ctx.acl, req)


ROUTES: dict[str, tuple[tuple[str, ...], Handler]] = {
    "/v1/catalog/register": (("PUT",), _plain(catalog.register)),
    "/v1/catalog/deregister": (("PUT",), _plain(catalog.deregister)),
    "/v1/catalog/services": (("GET",), _plain(catalog.services)),
    "/v1/catalog/nodes": (("GET",), _plain(catalog.nodes)),
    "/v1/catalog/service/": (("GET",), _plain(catalog.service_nodes)),
    "/v1/catalog/node/": (("GET",), _plain(catalog.node)),
    "/v1/catalog/node-services/": (("GET",), _plain(catalog.node_services)),
    "/v1/health/service/": (("GET",), _plain(health.service_health)),
    "/v1/health/node/": (("GET",), _plain(health.node_checks)),
    "/v1/health/checks/": (("GET",), _plain(health.service_checks)),
    "/v1/kv/": (("GET", "PUT", "DELETE"), _plain(kv_http.endpoint)),
    "/v1/txn": (
        ("PUT",),
        lambda ctx, req: txn.handle(ctx.store, ctx.acl, ctx.max_txn_ops, req),
    ),
    "/v1/session/create": (("PUT",), _plain(sessions.create)),
    "/v1/session/destroy/": (("PUT",), _plain(sessions.destroy)),
    "/v1/session/renew/": (("PUT",), _plain(sessions.renew)),
    "/v1/session/info/": (("GET",), _plain(sessions.info)),
    "/v1/session/list": (("GET",), _plain(sessions.listing)),
    "/v1/session/node/": (("GET",), _plain(sessions.node_sessions)),
    "/v1/status/leader": (("GET",), lambda ctx, req: json_response(req, "127.0.0.1:8300")),
    "/v1/status/peers": (("GET",), lambda ctx, req: json_response(req, ["127.0.0.1:8300"])),
    "/v1/agent/self": (("GET",), _agent_self),
    "/v1/agent/services": (("GET",), _plain(agent.services)),
    "/v1/agent/service/register": (("PUT",), _plain(agent.register)),
    "/v1/agent/service/deregister/": (("PUT",), _plain(agent.deregister)),
}


def _route(path: str) -> str | None:
    """ServeMux: an exact pattern, else the longest `/`-terminated prefix."""
    if path in ROUTES:
        return path
    prefixes = [p for p in ROUTES if p.endswith("/") and path.startswith(p)]
    return max(prefixes, key=len) if prefixes else None


def _control(ctx: Context, req: Request) -> Response:
    """/_double/faults: the test-facing fault controls (see faults.py)."""
    if req.method == "PUT":
        try:
            ctx.faults.add(parse_fault(req.body))
        except FaultError as exc:
            return Response(400, str(exc).encode(), dict(_TEXT))
    elif req.method == "DELETE":
        ctx.faults.clear()
    elif req.method != "GET":
        return Response(405, b"method not allowed", {**_TEXT, "Allow": "GET,PUT,DELETE"})
    return json_response(req, [fault.model_dump() for fault in ctx.faults.active()])


def dispatch(ctx: Context, req: Request) -> Response:
    if req.path == CONTROL_PATH:
        return _control(ctx, req)
    ctx.record(req.method, req.path)
    try:
        return _answer(ctx, req)
    finally:
        ctx.finished(req.method, req.path)


def _answer(ctx: Context, req: Request) -> Response:
    injected = ctx.faults.answer(req.method, req.path)
    if injected:
        return Response(*injected)
    pattern = _route(req.path)
    if pattern is None:
        if req.path + "/" in ROUTES:
            return Response(301, b"", {"Location": req.path + "/"})
        if req.path == "/":
            text = (
                "Consul Agent: UI disabled. To enable, set ui_config.enabled=true in the agent "
                "configuration and restart."
            )
            return Response(200, text.encode(), dict(_TEXT))
        hint = (
            "not a recognized HTTP API endpoint"
            if "/v1/" in req.path
            else ("if attempting to use the HTTP API, ensure the path starts with '/v1/'")
        )
        return Response(404, f"Invalid URL path: {hint}\n".encode(), dict(_TEXT))
    methods, handler = ROUTES[pattern]
    policy = {"X-Consul-Default-ACL-Policy": "deny" if ctx.acl.enabled else "allow"}
    allow = ",".join(("OPTIONS", *methods))
    if req.method == "OPTIONS":
        return Response(200, b"", {**policy, "Allow": allow})
    if req.method not in methods:
        body = f"method {req.method} not allowed".encode()
        return Response(405, body, {**policy, **_TEXT, "Allow": allow})
    try:
        response = handler(ctx, req)
    except APIError as exc:
        response = Response(exc.status, exc.body.encode(), {**_TEXT, **exc.headers})
    response.headers = {**policy, **response.headers}
    return response


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                chunk = self.rfile.read(size)
                self.rfile.readline()
                if size == 0:
                    return b"".join(chunks)
                chunks.append(chunk)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        req = Request(
            method=self.command,
            path=unquote(parts.path),
            query=parse_qs(parts.query, keep_blank_values=True),
            headers=self.headers,
            body=self._body(),
        )
        response = dispatch(self.server.context, req)
        body = response.body
        headers = dict(response.headers)
        accepts = "gzip" in self.headers.get("Accept-Encoding", "")
        if accepts and len(body) >= GZIP_MIN_SIZE:
            body = gzip.compress(body)
            headers.update({"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
        self.send_response(response.status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = _serve


class Server(ThreadingHTTPServer):
    """Tracks its open connections so stop() can cut keep-alive clients off like a dead agent."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, context: Context, tls: ssl.SSLContext | None = None) -> None:
        self.context = context
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)
        if tls is not None:  # an agent with https on: the handshake happens on accept
            self.socket = tls.wrap_socket(self.socket, server_side=True)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            open_now = list(self._connections)
        for connection in open_now:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (timeouts, fault tests, stop()) is routine, not an error."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)
