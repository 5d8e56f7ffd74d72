"""The REST front end: the seed's REST API (``POST /workers/register``, ``POST
/workers/find``) and WebSocket (``/workers/ws``, ``CapabilityUpdate`` messages), plus
listing, showing and unregistering workers.

Writes go through the ``Registrar`` (validated, stored in the inbox, then acknowledged;
a prompt cycle is requested); reads come from the registry, answered as ``capsync find``
answers them. Every status a route can answer is documented in /openapi.json.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, WebSocket
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect

from config.errors import InboxUnavailable, NotReady, RegistryError
from config.events import emit
from daemon import query
from daemon.front_rules import Pace, authorized
from daemon.registrar import RETRY_AFTER, Registrar, refused_answer
from discovery import intake, schema, seed_json
from discovery.wire import (
    FieldError,
    FindRequest,
    RegisterResponse,
    UpdateAnswer,
    WorkerOut,
    validation_errors,
)

Strings = Annotated[Sequence[str], Query()]
WS_POLICY = 1008  # close codes: policy violation (no or wrong token)
WS_TRY_LATER = 1013  # too many connections

_DESCRIPTIONS = {
    400: "malformed JSON, or a query that does not make sense",
    401: "missing or wrong bearer token (writes need it)",
    404: "no such worker",
    409: "the worker was not registered through the push API",
    413: "request body over the limit (64 KiB by default)",
    422: "invalid: every error with its field path",
    503: "the inbox or the registry cannot answer now (the daemon is starting: retry "
    "after Retry-After; no push source configured, store or registry unreachable, or too "
    "many connections)",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": RegisterResponse, "description": _DESCRIPTIONS[code]} for code in codes}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """A JSON schema with its local $refs inlined (it is embedded in OpenAPI)."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _body(model_schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _inline(model_schema, model_schema.get("$defs", {}))}
            },
        }
    }


# The id is optional in the model (a file or a label may supply it), required when pushed.
DECLARATION_BODY = _body(
    {**schema.DeclarationIn.model_json_schema(by_alias=False), "required": ["id"]}
)
FIND_BODY = _body(FindRequest.model_json_schema())


def refusal(
    status: int,
    message: str,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = RegisterResponse(success=False, message=message, errors=errors or [])
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse(jsonable_encoder(body), status_code=status, headers=headers)


class HttpRefusal(Exception):
    """A request refused: the status, the message, and every field error."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        errors: list[FieldError] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.headers, self.errors = status, headers, errors


def _refused(exc: intake.InvalidMessage) -> HttpRefusal:
    """400 when the body is not one JSON value, 422 (every field path) otherwise."""
    errors = [FieldError(field=loc, message=msg) for loc, msg in exc.problems]
    return HttpRefusal(400 if exc.malformed else 422, exc.message, errors=errors)


def rest_command(raw: bytes, ttl: str | None, registrar: Registrar) -> intake.Command:
    """A ``POST /workers/register`` body and its ``ttl`` query parameter, through the
    intake; HttpRefusal (400, 422) naming the query parameter or the field, and counted."""
    settings = registrar.ctx.settings
    try:
        lease = intake.ttl_text(ttl, field="query.ttl", max_ttl=settings.max_ttl)
        return intake.read(
            raw, limit=settings.max_body, max_ttl=settings.max_ttl, envelope=False, ttl_meta=lease
        )
    except intake.InvalidMessage as exc:
        registrar.invalid("rest")
        raise _refused(exc) from None


def find_request(raw: bytes, limit: int) -> FindRequest:
    """A ``POST /workers/find`` body, with the intake's bytes rules."""
    try:
        data = intake.parse(raw, limit=limit)
        intake.check(data)
        return FindRequest.model_validate(data)
    except intake.InvalidMessage as exc:
        raise _refused(exc) from None
    except ValidationError as exc:
        raise HttpRefusal(422, "invalid FindRequest", errors=validation_errors(exc)) from None


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body; 413 past ``limit`` bytes (read no further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HttpRefusal(413, f"request body over {limit} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise HttpRefusal(413, f"request body over {limit} bytes")
    return bytes(raw)


def add_routes(app: FastAPI, registrar: Registrar) -> None:
    _rest_routes(app, registrar)
    _websocket_route(app, registrar)


def _rest_routes(app: FastAPI, registrar: Registrar) -> None:
    ctx = registrar.ctx
    limit = ctx.settings.max_body

    @app.exception_handler(HttpRefusal)
    async def refused(request: Request, exc: HttpRefusal) -> JSONResponse:
        return refusal(exc.status, str(exc), exc.errors, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return refusal(422, "invalid request", validation_errors(exc, skip=1))

    def write_access(request: Request) -> None:
        if not authorized(request.headers.get("authorization"), ctx.token):
            raise HttpRefusal(401, "writes need the API token: Authorization: Bearer <token>")

    async def blocking(call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await run_in_threadpool(call, *args, **kwargs)
        except NotReady as exc:
            raise HttpRefusal(503, str(exc), {"Retry-After": str(RETRY_AFTER)}) from None
        except (InboxUnavailable, RegistryError) as exc:
            raise HttpRefusal(503, str(exc)) from None

    async def entries(q: query.Query) -> list[query.Decoded]:
        registry = ctx.registry()
        if registry is None:
            raise HttpRefusal(503, "the registry is not open yet")
        return list(await blocking(query.select, registry, q))

    @app.post(
        "/workers/register",
        response_model=RegisterResponse,
        response_model_exclude_defaults=True,
        responses=_errors(400, 401, 413, 422, 503),
        openapi_extra=DECLARATION_BODY,
    )
    async def register(
        request: Request,
        ttl: str | None = Query(
            None,
            description="lease, seconds (a number above 0, at most api.max_ttl); "
            "registering again renews it",
            json_schema_extra={"type": "number", "exclusiveMinimum": 0},
        ),
    ) -> Any:
        """Register (or replace) a worker's declaration, the seed's RegisterResponse."""
        write_access(request)
        command = rest_command(await read_body(request, limit), ttl, registrar)
        await blocking(registrar.register, command, via="rest")
        return RegisterResponse(success=True, message="Worker registered")

    @app.post(
        "/workers/find",
        response_model=list[dict[str, Any]],
        responses=_errors(400, 413, 422, 503),
        openapi_extra=FIND_BODY,
    )
    async def find(request: Request) -> Any:
        """The seed's FindRequest: the declarations find_with_capability selects."""
        req = find_request(await read_body(request, limit), limit)
        q = query.Query.seed_find(req, int(time.time()))
        return [seed_json.to_seed(caps) for _, _, caps in await entries(q)]

    @app.get("/workers", response_model=list[WorkerOut], responses=_errors(400, 422, 503))
    async def list_workers(  # noqa: PLR0913 (FastAPI reads its query parameters here)
        *,
        category: str | None = None,
        tool: Strings = (),
        has: Strings = (),
        flag: Strings = (),
        meta: Annotated[Sequence[str], Query(description="KEY=VALUE")] = (),
        all_required: bool = False,
        verified: bool = False,
        permission: Annotated[Sequence[str], Query(description="CATEGORY:PERMISSION")] = (),
        ignore_case: Annotated[
            bool,
            Query(description="compare tool names case-insensitively (capsync's extension)"),
        ] = False,
        healthy: Annotated[
            bool, Query(description="passing workers only (their health; capsync's extension)")
        ] = False,
    ) -> Any:
        """Workers in the registry, filtered as ``capsync find`` filters them."""
        try:
            q = query.Query.of(
                category=category,
                tools=tool,
                has=has,
                flags=flag,
                meta=meta,
                all_required=all_required,
                verified=verified,
                permissions=permission,
                now=int(time.time()),
                spell=lambda option: f"query parameter {option!r}",
                ignore_case=ignore_case,
                healthy=healthy,
            )
        except ValueError as exc:
            raise HttpRefusal(400, str(exc)) from None
        return [query.worker_json(*found) for found in await entries(q)]

    @app.get("/workers/{worker_id}", response_model=WorkerOut, responses=_errors(404, 503))
    async def show(worker_id: str) -> Any:
        """One worker as the registry holds it, with its source, ref and owner."""
        found = [r for r in await entries(query.Query()) if r[1].id.lower() == worker_id.lower()]
        if not found:
            raise HttpRefusal(404, f"no worker {worker_id!r} in the registry")
        return query.worker_json(*found[0])

    @app.delete(
        "/workers/{worker_id}",
        response_model=RegisterResponse,
        response_model_exclude_defaults=True,
        responses=_errors(401, 404, 409, 503),
    )
    async def unregister(request: Request, worker_id: str) -> Any:
        """Unregister a worker registered through the push API (any other is refused)."""
        write_access(request)
        if await blocking(registrar.unregister, worker_id, via="rest"):
            return RegisterResponse(success=True, message="Worker unregistered")
        found = [r for r in await entries(query.Query()) if r[1].id.lower() == worker_id.lower()]
        if found:
            entry = found[0][1]
            raise HttpRefusal(
                409,
                f"worker {entry.id!r} comes from source {entry.source!r} "
                f"({entry.ref}), not from the push API: remove it where it "
                "is declared",
            )
        raise HttpRefusal(404, f"no worker {worker_id!r} registered")


def _websocket_route(app: FastAPI, registrar: Registrar) -> None:
    ctx = registrar.ctx
    sockets: set[str] = set()

    @app.websocket("/workers/ws")
    async def updates(websocket: WebSocket) -> None:
        """The seed's CapabilityUpdate messages; each answered with an UpdateAnswer."""
        await websocket.accept()  # accepted, to say why it is refused (not a bare 403)
        if not authorized(websocket.headers.get("authorization"), ctx.token):
            await websocket.close(WS_POLICY, "writes need the API token: Authorization: Bearer")
            return
        if len(sockets) >= ctx.settings.max_websockets:  # accepted, to say why
            await websocket.close(WS_TRY_LATER, "too many WebSocket connections")
            return
        conn = uuid.uuid4().hex
        sockets.add(conn)
        registrar.bind(conn)
        pace = Pace(ctx.settings.max_messages)
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if delay := pace.delay(time.monotonic()):
                    await asyncio.sleep(delay)
                text, data = message.get("text"), message.get("bytes")
                raw = text.encode("utf-8", "surrogatepass") if text is not None else data or b""
                answer = await run_in_threadpool(handle_update, registrar, raw, conn)
                await websocket.send_text(answer.model_dump_json())
        except WebSocketDisconnect:
            pass
        finally:
            sockets.discard(conn)
            try:
                await run_in_threadpool(registrar.release, conn)
            except InboxUnavailable as exc:
                # The registrations' own expiry (renewed until now) still applies.
                emit(logging.WARNING, "lease_release_failed", error=str(exc))


def handle_update(registrar: Registrar, raw: bytes, conn: str) -> UpdateAnswer:
    """One WebSocket message (text or binary, the same bytes) -> its answer; never raises
    for what a client sends."""
    settings = registrar.ctx.settings
    try:
        command = intake.read(raw, limit=settings.max_body, max_ttl=settings.max_ttl, envelope=True)
    except intake.InvalidMessage as exc:
        registrar.invalid("websocket")
        return refused_answer(exc)
    return registrar.apply(command, via="websocket", conn=conn)
