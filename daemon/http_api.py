"""The daemon's HTTP endpoints: /healthz, /readyz, /metrics (Prometheus), /status (JSON).

Loopback by default; read-only; nothing secret is ever served.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from config.errors import ConfigError
from daemon.metrics import Metrics
from daemon.status import DaemonState


class HttpApi:
    def __init__(self, listen: str, state: DaemonState, metrics: Metrics) -> None:
        host, _, port = listen.rpartition(":")
        handler = type("Handler", (_Handler,), {"state": state, "metrics": metrics})
        try:
            self.server = ThreadingHTTPServer((host.strip("[]"), int(port)), handler)
        except OSError as exc:  # occupied, not an address of this host, unresolvable
            raise ConfigError(f"daemon.listen {listen!r}: cannot listen there: "
                              f"{exc.strerror or exc}") from None
        self.server.daemon_threads = True
        self.address = "{}:{}".format(*self.server.server_address[:2])
        self._thread = threading.Thread(target=self.server.serve_forever, name="http",
                                        daemon=True)

    def start(self) -> HttpApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    state: DaemonState
    metrics: Metrics
    server_version = "capsync"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/readyz":
            ready = self.state.ready
            body = b"ready\n" if ready else f"not ready: {self.state.summary()}\n".encode()
            self._send(200 if ready else 503, body, "text/plain; charset=utf-8")
        elif path == "/metrics":
            self._send(200, self.metrics.exposition(), CONTENT_TYPE_LATEST)
        elif path == "/status":
            body = json.dumps(self.state.as_json(), indent=2).encode() + b"\n"
            self._send(200, body, "application/json")
        else:
            self._send(404, b"not found: try /healthz /readyz /metrics /status\n",
                       "text/plain; charset=utf-8")

    def log_message(self, format: str, *args: object) -> None:
        """Requests are not events worth a log line (probes hit these every few seconds)."""

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
