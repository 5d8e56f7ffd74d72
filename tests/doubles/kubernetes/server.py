"""HTTP front of the double: the list and watch endpoints of the real API, on loopback.

Responses follow the API server's shapes: PodList / WorkerCapabilitiesList with
metadata.resourceVersion and continue, watch streams of newline-delimited
{"type", "object"} events over chunked HTTP/1.1, and a metav1 Status for every error.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .store import ITEM_KINDS, PODS, RESOURCES, BadRequest, Expired, parse_selector

if TYPE_CHECKING:
    from . import KubernetesDouble

GROUP, VERSION = "valkra.io", "v1"
DEFAULT_WATCH_SECONDS = 1800
POLL_SECONDS = 0.2  # how often a quiet watch stream checks for shutdown

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
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

    def __init__(self, address: tuple[str, int], double: KubernetesDouble) -> None:
        self.double = double
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
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the double's callers read ``requests`` instead."""

    def do_GET(self) -> None:
        double = self.server.double
        double.log_request("GET", self.path)
        if fault := double.take_fault():
            if fault.body is None:
                return self.send_status(status_object(fault.status, "injected fault"))
            return self.send_text(fault.status, fault.body, fault.content_type)
        if self.headers.get("Authorization") != f"Bearer {double.token}":
            return self.send_status(status_object(401, "Unauthorized"))
        url = urlsplit(self.path)
        # The first value of a repeated parameter, as apimachinery's converters take it.
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        parts = [p for p in url.path.split("/") if p]
        try:
            self.route(parts, query)
        except BadRequest as exc:
            self.send_status(status_object(400, str(exc)))
        except Expired as exc:
            self.send_status(status_object(410, str(exc)))
        return None

    def do_POST(self) -> None:
        self.server.double.log_request(self.command, self.path)
        self.close_connection = True  # the body is left unread
        self.send_status(status_object(405, "the double serves only list and watch"))

    do_PUT = do_PATCH = do_DELETE = do_POST

    def route(self, parts: list[str], query: dict[str, str]) -> None:
        double = self.server.double
        resource, namespace = None, None
        if parts[:2] == ["api", "v1"]:
            resource, namespace = _collection(parts[2:], PODS)
        elif parts[:3] == ["apis", GROUP, VERSION] and double.crd_installed:
            resource, namespace = _collection(parts[3:], RESOURCES)
        if resource is not None:
            return self.serve_collection(resource, namespace, query)
        if doc := _discovery(parts, double.crd_installed):
            return self.send_json(200, doc)
        if parts[:2] == ["api", "v1"]:
            return self.send_status(
                status_object(404, "the server could not find the requested resource")
            )
        # A group nobody serves (a CRD not installed) falls through every API handler to
        # Go's http.NotFound: plain text, not a Status.
        return self.send_text(404, "404 page not found\n")

    def serve_collection(self, resource: str, namespace: str | None, query: dict[str, str]) -> None:
        double = self.server.double
        if resource == RESOURCES and double.crd_starting:
            return self.send_status(
                status_object(
                    503,
                    "the server is currently unable to handle the request",
                    "ServiceUnavailable",
                )
            )
        verb = "watch" if _flag(query, "watch") else "list"
        if (forbidden := double.forbidden(verb, resource, namespace)) is not None:
            return self.send_status(forbidden)
        for unsupported in ("fieldSelector", "resourceVersionMatch"):
            if query.get(unsupported):
                raise BadRequest(
                    f"{unsupported}: the double does not implement it; "
                    "implement it here before the source sends it"
                )
        selector = query.get("labelSelector", "")
        if verb == "watch":
            return self.serve_watch(resource, namespace, selector, query)
        limit = _integer(query, "limit", 0)
        body = self.server.double.store.list(
            resource, namespace, selector, limit, query.get("continue") or None
        )
        return self.send_json(200, body)

    def serve_watch(
        self, resource: str, namespace: str | None, selector: str, query: dict[str, str]
    ) -> None:
        store = self.server.double.store
        rv_text = query.get("resourceVersion", "")
        deadline = time.monotonic() + _integer(query, "timeoutSeconds", DEFAULT_WATCH_SECONDS)
        requirements = parse_selector(selector)  # a bad one is a 400, before the stream
        with store.cond:
            epoch = store.epoch
            if rv_text in ("", "0"):
                start, pending = store.rv, store.current(resource, namespace, selector)
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
            end = self.stream(resource, namespace, requirements, start, epoch, deadline)
            if end is None:  # the double is stopping: drop the connection mid-stream
                self.close_connection = True
                return
            if _flag(query, "allowWatchBookmarks") and end >= 0:
                self.send_event("BOOKMARK", _bookmark(resource, end))
            self.write_chunk(b"")
        except OSError:
            self.close_connection = True

    def stream(
        self,
        resource: str,
        namespace: str | None,
        requirements: list[tuple[str, str, frozenset[str]]],
        start: int,
        epoch: int,
        deadline: float,
    ) -> int | None:
        """Send events after ``start`` until the deadline (returns the resourceVersion seen),
        a compaction (sends 410 and returns -1) or shutdown (returns None)."""
        store = self.server.double.store
        while True:
            with store.cond:
                try:
                    events = store.events_after(resource, start, namespace, requirements)
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


def _collection(rest: list[str], resource: str) -> tuple[str | None, str | None]:
    """[pods] or [namespaces, NS, pods] -> (resource, namespace); anything else None."""
    if rest == [resource]:
        return resource, None
    if len(rest) == 3 and rest[0] == "namespaces" and rest[2] == resource:
        return resource, rest[1]
    return None, None


def _discovery(parts: list[str], crd_installed: bool) -> dict[str, Any] | None:
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
        if crd_installed:
            version = {"groupVersion": f"{GROUP}/{VERSION}", "version": VERSION}
            groups.append({"name": GROUP, "versions": [version], "preferredVersion": version})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
    if parts == ["api", "v1"]:
        return _resource_list("v1", PODS, "Pod")
    if parts == ["apis", GROUP, VERSION] and crd_installed:
        return _resource_list(f"{GROUP}/{VERSION}", RESOURCES, "WorkerCapabilities")
    return None


def _resource_list(group_version: str, plural: str, kind: str) -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [
            {"name": plural, "namespaced": True, "kind": kind, "verbs": ["get", "list", "watch"]}
        ],
    }


def _bookmark(resource: str, rv: int) -> dict[str, Any]:
    api_version, kind = ITEM_KINDS[resource]
    return {"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": str(rv)}}
