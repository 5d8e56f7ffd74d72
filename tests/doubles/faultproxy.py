"""A fault-injecting HTTP proxy for the tests: it sits in front of a double (Consul's)
and answers chosen requests as a misbehaving network would: a rate limit with
``Retry-After``, an authenticating proxy's 407 page, a gateway's 502, a body cut short,
JSON of the wrong shape, a slow answer. Everything else is forwarded unchanged.

Faults match on method and path prefix (the query string excluded) and may be limited
to a number of requests; the first matching fault wins.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

HTML_PAGE = b"<html><body><h1>Not Found</h1><p>nginx</p></body></html>"


@dataclass
class Fault:
    """What to answer instead of (or on top of) the upstream's answer.

    ``status`` set: answer it with ``body`` and ``headers``, never asking upstream.
    ``truncate``: forward, then cut the body to half (Content-Length matches the cut).
    ``reshape``: forward, then replace the JSON body by ``reshape(body)``.
    ``delay``: wait this long first. ``count``: how many requests it applies to.
    """

    status: int | None = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    truncate: bool = False
    reshape: Callable[[Any], Any] | None = None
    delay: float = 0.0
    count: int | None = None


def html(status: int, **headers: str) -> Fault:
    """A proxy's or gateway's HTML page."""
    return Fault(status, HTML_PAGE, {"Content-Type": "text/html", **headers})


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream  # host:port
        self._faults: list[tuple[str, str, Fault]] = []
        self._lock = threading.Lock()
        self.hits: list[tuple[str, str]] = []  # (method, path) of each faulted request
        self.sizes: list[tuple[str, str, int]] = []  # (method, path, body bytes), all
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._httpd.server_address[1]}"

    def inject(self, method: str, path: str, fault: Fault) -> None:
        with self._lock:
            self._faults.append((method, path, fault))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for index, (m, prefix, fault) in enumerate(self._faults):
                if m == method and path.split("?", maxsplit=1)[0].startswith(prefix):
                    if fault.count is not None:
                        fault.count -= 1
                        if fault.count <= 0:
                            del self._faults[index]
                    self.hits.append((method, path))
                    return fault
        return None

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read the registry, not the proxy's log."""

        def do_GET(self) -> None:
            self._serve()

        def do_PUT(self) -> None:
            self._serve()

        def do_DELETE(self) -> None:
            self._serve()

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request_body = self.rfile.read(length) if length else b""
            proxy.sizes.append((self.command, self.path, len(request_body)))
            fault = proxy.fault_for(self.command, self.path)
            if fault is not None and fault.delay:
                time.sleep(fault.delay)
            if fault is not None and fault.status is not None:
                self._answer(fault.status, fault.body, fault.headers)
                return
            status, body, headers = self._forward(request_body)
            if fault is not None and fault.reshape is not None:
                body = json.dumps(fault.reshape(json.loads(body))).encode()
            if fault is not None and fault.truncate:
                body = body[: len(body) // 2]
            self._answer(status, body, headers)

        def _forward(self, body: bytes) -> tuple[int, bytes, dict[str, str]]:
            connection = http.client.HTTPConnection(proxy.upstream, timeout=120)
            try:
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
                }
                connection.request(self.command, self.path, body=body or None, headers=headers)
                response = connection.getresponse()
                kept = {
                    k: v
                    for k, v in response.getheaders()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection")
                }
                return response.status, response.read(), kept
            finally:
                connection.close()

        def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
