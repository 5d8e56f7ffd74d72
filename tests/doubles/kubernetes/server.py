"""HTTPS front of the double: the API server's endpoints for the served types, on loopback.

Responses follow the API server's shapes: lists with metadata.resourceVersion and
continue, single objects, watch streams of newline-delimited {"type", "object"} events
over chunked HTTP/1.1, creates (201), JSON merge patches, SelfSubjectAccessReviews, the
discovery documents, and a metav1 Status for every error. Each connection's TLS
handshake runs in its own thread, so a client that never finishes one blocks nobody.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from . import objects as api
from . import tables
from .rbac import User
from .resources import CRDS, RESOURCES, ResourceType, lookup, served
from .store import BadRequest, Expired, Scope

if TYPE_CHECKING:
    from . import KubernetesDouble

GROUP, VERSION = "valkra.io", "v1"
DEFAULT_WATCH_SECONDS = 1800
POLL_SECONDS = 0.2  # how often a quiet watch stream checks for shutdown
MAX_BODY = 3 * 1024 * 1024  # the API server's request body limit (3 MiB)
DRAIN = 256 * 1024  # net/http's maxPostHandlerReadBytes
# Go's net/http (server.go, tlsRecordHeaderLooksLikeHTTP) answers a plain-HTTP request
# on a TLS port with this, instead of a handshake error.
PLAIN_HTTP_ANSWER = (
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_object(code: int, message: str, reason: str | None = None) -> dict[str, Any]:
    """A metav1 Status, the body of every error response and ERROR watch event."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or REASONS.get(code, "Unknown"),
        "code": code,
    }


class DoubleServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], double: KubernetesDouble, tls: ssl.SSLContext
    ) -> None:
        self.double = double
        self.tls = tls
        self.closing = False
        self.connections: set[socket.socket] = set()
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet when a client hangs up (or ``stop()`` cut it); loud for the double's bugs."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Cut kept-alive and streaming connections, as a dying API server would."""
        self.closing = True
        for conn in list(self.connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: DoubleServer

    def setup(self) -> None:
        self.request = self.server.tls.wrap_socket(
            self.request, server_side=True, do_handshake_on_connect=False
        )
        self.server.connections.add(self.request)
        super().setup()

    def handle(self) -> None:
        # A failed handshake (a client that does not trust the CA) is an SSLError, an
        # OSError: the connection ends, as with the API server's "TLS handshake error".
        try:
            if _looks_like_http(socket.socket.recv(self.request, 5, socket.MSG_PEEK)):
                return self.answer_plain_http()
            self.request.do_handshake()
        except OSError:
            return
        super().handle()

    def answer_plain_http(self) -> None:
        """Send Go's answer, then read what the client sent until it hangs up, so that
        closing with unread bytes does not reset the connection before it reads it."""
        raw = self.request  # before any handshake: its plain socket methods
        socket.socket.sendall(raw, PLAIN_HTTP_ANSWER)
        socket.socket.shutdown(raw, socket.SHUT_WR)
        raw.settimeout(5)
        while socket.socket.recv(raw, 65536):
            pass

    def finish(self) -> None:
        self.server.connections.discard(self.request)
        with contextlib.suppress(OSError):
            super().finish()
        self.request.close()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the double's callers read ``requests`` instead."""

    def do_GET(self) -> None:
        self.dispatch()

    do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

    printer: list[dict[str, Any]] | None = None  # this request's Table columns, if any

    def dispatch(self) -> None:
        double = self.server.double
        self.printer = None
        double.log_request(self.command, self.path)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            return self.send_status(status_object(400, "invalid Content-Length"))
        # Like Go's server, read (and drop) a little past the limit so that the client
        # gets the answer; a body far over it is left unread and the connection closed.
        body = self.rfile.read(min(length, MAX_BODY + DRAIN))
        if length > MAX_BODY:
            self.close_connection = length > MAX_BODY + DRAIN
            return self.send_status(
                status_object(413, f"Request entity too large: limit is {MAX_BODY}")
            )
        if fault := double.take_fault():
            if fault.body is None:
                return self.send_status(status_object(fault.status, "injected fault"))
            return self.send_text(fault.status, fault.body, fault.content_type)
        user = double.authenticate(self.headers.get("Authorization", ""))
        if user is None:
            return self.send_status(status_object(401, "Unauthorized"))
        url = urlsplit(self.path)
        # The first value of a repeated parameter, as apimachinery's converters take it.
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        parts = [p for p in url.path.split("/") if p]
        try:
            self.route(parts, query, user, body)
        except BadRequest as exc:
            self.send_status(status_object(400, str(exc)))
        except Expired as exc:
            self.send_status(status_object(410, str(exc)))
        except api.StatusError as exc:
            self.send_status(exc.status)
        return None

    def route(self, parts: list[str], query: dict[str, str], user: User, body: bytes) -> None:
        double = self.server.double
        target = _target(parts, double.crd_installed)
        if target is not None:
            kind, namespace, name = target
            return self.serve_resource(kind, namespace, name, query, user, body)
        if self.command == "GET" and (doc := _discovery(parts, double.crd_installed)):
            return self.send_json(200, doc)
        if parts[:2] == ["api", "v1"]:
            return self.send_status(
                status_object(404, "the server could not find the requested resource")
            )
        # A group nobody serves (a CRD not installed) falls through every API handler to
        # Go's http.NotFound: plain text, not a Status.
        return self.send_text(404, "404 page not found\n")

    def serve_resource(
        self,
        kind: ResourceType,
        namespace: str | None,
        name: str | None,
        query: dict[str, str],
        user: User,
        body: bytes,
    ) -> None:
        double = self.server.double
        if kind.plural == RESOURCES and double.crd_starting:
            return self.send_status(
                status_object(
                    503,
                    "the server is currently unable to handle the request",
                    "ServiceUnavailable",
                )
            )
        verb = api.verb(self.command, name, _flag(query, "watch"), kind)
        if (forbidden := double.authorize(user, verb, kind, namespace, name)) is not None:
            return self.send_status(forbidden)
        self.printer = self.table_columns(kind)
        if verb in ("list", "watch"):
            return self.serve_collection(kind.plural, namespace, query)
        store = double.store
        if verb == "get" and name is not None:
            return self.send_json(200, self.printed(api.read(store, kind, namespace or "", name)))
        if verb == "create" and name is None:
            created = api.create(double, kind, namespace or "", query, user, body)
            return self.send_json(201, created)
        if verb == "patch" and name is not None:
            content_type = self.headers.get("Content-Type", "")
            patched = api.patch(store, kind, namespace or "", name, content_type, body)
            return self.send_json(200, patched)
        return self.send_status(
            status_object(
                405,
                f"{self.command} on {kind.qualified}: the double does not implement it; "
                "implement it here before a client needs it",
            )
        )

    def serve_collection(self, resource: str, namespace: str | None, query: dict[str, str]) -> None:
        if query.get("resourceVersionMatch"):
            raise BadRequest(
                "resourceVersionMatch: the double does not implement it; "
                "implement it here before the source sends it"
            )
        selector, fields = query.get("labelSelector", ""), query.get("fieldSelector", "")
        if _flag(query, "watch"):
            return self.serve_watch(resource, Scope.parse(namespace, selector, fields), query)
        limit = _integer(query, "limit", 0)
        body = self.server.double.store.list(
            resource, namespace, selector, limit, query.get("continue") or None, fields
        )
        if self.printer is not None:
            body = tables.table(self.printer, body["items"], body["metadata"])
        return self.send_json(200, body)

    def table_columns(self, kind: ResourceType) -> list[dict[str, Any]] | None:
        """The printer columns when the client asks for a Table of a custom resource
        whose CRD the double holds; None: answer plain JSON."""
        if not kind.custom or not tables.wanted(self.headers.get("Accept", "")):
            return None
        crd = self.server.double.store.get(CRDS, "", kind.qualified)
        return tables.columns(crd, kind.version) if crd is not None else None

    def printed(self, obj: dict[str, Any]) -> dict[str, Any]:
        """One object as this request asked for it: itself, or a one-row Table."""
        if self.printer is None:
            return obj
        rv = obj["metadata"]["resourceVersion"]
        return tables.table(self.printer, [obj], {"resourceVersion": rv})

    def serve_watch(self, resource: str, scope: Scope, query: dict[str, str]) -> None:
        store = self.server.double.store
        rv_text = query.get("resourceVersion", "")
        deadline = time.monotonic() + _integer(query, "timeoutSeconds", DEFAULT_WATCH_SECONDS)
        with store.cond:
            epoch = store.epoch
            if rv_text in ("", "0"):
                start, pending = store.rv, store.current(resource, scope)
            else:
                start, pending = _integer(query, "resourceVersion", 0), []
                if start < store.compacted and self.server.double.gone_as_http_error:
                    raise Expired(f"too old resource version: {start} ({store.compacted})")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.server.double.cut_watches:
            self.write_chunk(b"")
            return
        try:
            for event in pending:
                self.send_event(event.type, event.obj)
            end = self.stream(resource, scope, start, epoch, deadline)
            if end is None:  # the double is stopping: drop the connection mid-stream
                self.close_connection = True
                return
            if _flag(query, "allowWatchBookmarks") and end >= 0:
                self.send_event("BOOKMARK", _bookmark(resource, end))
            self.write_chunk(b"")
        except OSError:
            self.close_connection = True

    def stream(
        self, resource: str, scope: Scope, start: int, epoch: int, deadline: float
    ) -> int | None:
        """Send events after ``start`` until the deadline (returns the resourceVersion seen),
        a compaction (sends 410 and returns -1) or shutdown (returns None)."""
        store = self.server.double.store
        while True:
            with store.cond:
                try:
                    events = store.events_after(resource, start, scope)
                    if epoch != store.epoch:
                        raise Expired("The resourceVersion for the provided watch is too old.")
                except Expired as exc:
                    expired = str(exc)
                else:
                    expired = None
                if expired is None and not events:
                    if self.server.closing:
                        return None
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return store.rv
                    store.cond.wait(min(remaining, POLL_SECONDS))
                    continue
            if expired is not None:
                self.send_event("ERROR", status_object(410, expired, "Expired"))
                return -1
            for event in events:
                self.send_event(event.type, event.obj)
            start = events[-1].rv

    def send_event(self, type_: str, obj: dict[str, Any]) -> None:
        if type_ in ("ADDED", "MODIFIED", "DELETED"):
            obj = self.printed(obj)
        self.write_chunk(json.dumps({"type": type_, "object": obj}).encode() + b"\n")

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def send_json(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_status(self, status: dict[str, Any]) -> None:
        self.send_json(int(status["code"]), status)

    def send_text(
        self, code: int, text: str, content_type: str = "text/plain; charset=utf-8"
    ) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _looks_like_http(head: bytes) -> bool:
    return head in (b"GET /", b"HEAD ", b"POST ", b"PUT /", b"OPTIO")


def _flag(query: dict[str, str], name: str) -> bool:
    """A boolean query parameter as the API server converts it: absent, "0" or "false"
    in any case is false; anything else, the empty string and "True" included, is true."""
    if name not in query:
        return False
    value = query[name]
    return not (value == "0" or value.lower() == "false")


def _integer(query: dict[str, str], name: str, default: int) -> int:
    try:
        return int(query.get(name) or default)
    except ValueError:
        raise BadRequest(f"{name}: invalid value {query[name]!r}") from None


def _target(
    parts: list[str], crd_installed: bool
) -> tuple[ResourceType, str | None, str | None] | None:
    """The (type, namespace, name) a resource path names, else None: [plural],
    [plural, name] for cluster-scoped types, [namespaces, NS, plural(, name)]."""
    if parts[:2] == ["api", "v1"]:
        group_version, rest = "v1", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not 1 <= len(rest) <= 2:
        return None
    kind = lookup(group_version, rest[0], crd_installed)
    if kind is None or (namespace is not None and not kind.namespaced):
        return None
    if len(rest) == 2 and kind.namespaced and namespace is None:
        return None
    return kind, namespace, rest[1] if len(rest) == 2 else None


def _discovery(parts: list[str], crd_installed: bool) -> dict[str, Any] | None:
    """The legacy discovery documents (kubectl falls back to them when the answer to its
    aggregated-discovery Accept header is a plain APIGroupList)."""
    kinds = served(crd_installed)
    if parts == ["version"]:
        return {
            "major": "1",
            "minor": "31",
            "gitVersion": "v1.31.0-capsync-double",
            "platform": "linux/amd64",
        }
    if parts == ["api"]:
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    if parts == ["apis"]:
        groups = []
        for group_version in dict.fromkeys(k.group_version for k in kinds if k.group):
            group, version = group_version.split("/")
            entry = {"groupVersion": group_version, "version": version}
            groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
    if parts == ["api", "v1"]:
        group_version = "v1"
    elif len(parts) == 3 and parts[0] == "apis":
        group_version = f"{parts[1]}/{parts[2]}"
    else:
        return None
    resources = [k.discovery() for k in kinds if k.group_version == group_version]
    if not resources:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def _bookmark(resource: str, rv: int) -> dict[str, Any]:
    kind = next(k for k in served(True) if k.plural == resource)
    return {
        "apiVersion": kind.group_version,
        "kind": kind.kind,
        "metadata": {"resourceVersion": str(rv)},
    }
