"""The daemon's one HTTP stack: an ASGI app (FastAPI) served by uvicorn in its own thread
and event loop, on a socket bound before the thread starts (so the address is known, and
a busy port fails start-up).

Routes: /healthz, /readyz, /metrics (Prometheus), /status (JSON), the push API
(daemon/rest_api.py) and the watch (daemon/watch.py); /openapi.json documents them all.
Loopback by default; a listener on any other address needs a write token, or the daemon
refuses to start. Nothing secret is ever served or logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from typing import TYPE_CHECKING, Any

import h11
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from config.errors import ConfigError
from config.events import emit
from daemon import rest_api, watch
from daemon.front_rules import require_token_off_loopback
from daemon.metrics import Metrics
from daemon.registrar import Registrar
from daemon.status import DaemonState

if TYPE_CHECKING:
    from daemon.front_ends import FrontEndContext

TEXT = "text/plain; charset=utf-8"


def build_app(state: DaemonState, metrics: Metrics, registrar: Registrar) -> FastAPI:
    """A fresh app for one server: nothing global, so it can be built twice in a test."""
    app = FastAPI(
        title="capsync",
        version="1",
        docs_url=None,
        redoc_url=None,
        description="Worker capability registry: health, status, metrics, the "
        "seed's push API, and a live watch of the registry.",
    )

    @app.get(
        "/healthz",
        response_class=PlainTextResponse,
        responses={200: {"content": {TEXT: {}}, "description": "alive"}},
    )
    def healthz() -> Response:
        return PlainTextResponse("ok\n")

    @app.get(
        "/readyz",
        response_class=PlainTextResponse,
        responses={
            200: {
                "content": {TEXT: {}},
                "description": "every registry answered and the last cycle succeeded",
            },
            503: {"content": {TEXT: {}}, "description": "not ready, with the last summary"},
        },
    )
    def readyz() -> Response:
        if state.ready:
            return PlainTextResponse("ready\n")
        return PlainTextResponse(f"not ready: {state.summary()}\n", status_code=503)

    @app.get(
        "/metrics",
        responses={
            200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus exposition"}
        },
    )
    def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/status",
        responses={200: {"description": "per-source and per-registry state, the last plan"}},
    )
    def status() -> Response:
        body = json.dumps(state.as_json(), indent=2) + "\n"
        return Response(body, media_type="application/json")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404 and exc.detail == "Not Found":
            return PlainTextResponse(
                "not found: try /healthz /readyz /metrics /status /workers /openapi.json\n",
                status_code=404,
            )
        return JSONResponse(
            {"success": False, "message": str(exc.detail)},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    rest_api.add_routes(app, registrar)
    watch.add_routes(app, registrar.ctx)
    return app


class HttpApi:
    def __init__(
        self, listen: str, state: DaemonState, metrics: Metrics, registrar: Registrar
    ) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        self.sock = _bound(listen, host, port)
        try:
            require_token_off_loopback(
                "daemon.listen", listen, registrar.ctx.token, self.sock.getsockname()[0]
            )
        except ConfigError:
            self.sock.close()
            raise
        self.sock.listen(1024)
        self.address = "{}:{}".format(*self.sock.getsockname()[:2])
        api = registrar.ctx.settings
        protocol = type(
            "HeaderDeadline", (_HeaderDeadline,), {"header_timeout": api.header_timeout}
        )
        config = uvicorn.Config(
            build_app(state, metrics, registrar),
            http=protocol,
            log_config=None,
            access_log=False,
            lifespan="off",
            limit_concurrency=api.max_connections,
            ws="websockets-sansio",
            ws_max_size=api.max_body,
            ws_ping_interval=api.ping_interval,
            ws_ping_timeout=api.ping_interval,
            timeout_graceful_shutdown=2,
        )
        _quiet_uvicorn()
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="http", daemon=True
        )

    def start(self) -> HttpApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(5)
        self.sock.close()

    def status(self) -> dict[str, Any]:
        return {"address": self.address}


def build(ctx: FrontEndContext) -> HttpApi:
    """The front-end table's entry point (daemon/front_ends.py)."""
    return HttpApi(ctx.settings.daemon.listen, ctx.state, ctx.metrics, ctx.registrar)


def _bound(listen: str, host: str, port: str) -> socket.socket:
    """A socket bound to the first address ``host`` resolves to; ConfigError when it is
    occupied, not an address of this host, or does not resolve."""
    sock: socket.socket | None = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise ConfigError(
            f"daemon.listen {listen!r}: cannot listen there: {exc.strerror or exc}"
        ) from None
    return sock


class _Forward(logging.Handler):
    """uvicorn's own messages become capsync events (one line, the daemon's format)."""

    def emit(self, record: logging.LogRecord) -> None:
        emit(record.levelno, "http_server", message=record.getMessage().splitlines()[0])


def _quiet_uvicorn() -> None:
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [_Forward()]
        logger.setLevel(logging.WARNING)
        logger.propagate = False


class _HeaderDeadline(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, plus a deadline: a connection whose request headers
    are not complete ``header_timeout`` seconds after it opened (or after its previous
    response) is closed, so silent or slow clients cannot hold ``max_connections``."""

    header_timeout = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE and self._deadline is not None:
            self._deadline.cancel()  # the headers are complete
            self._deadline = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _expire(self) -> None:
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            emit(logging.INFO, "http_header_timeout", client=_peer(self.client))
            self.transport.close()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"
