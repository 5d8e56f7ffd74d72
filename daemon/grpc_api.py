"""The gRPC front end: the ``capsync.v1.WorkerRegistry`` service (discovery/proto/
registry.proto), the standard health service and server reflection, on a listener of
their own (``[grpc] listen``, off by default).

A thread-pool server (the daemon is threads): each call runs in a pool thread and is
handed what the REST API is handed, the ``Registrar`` (writes through the inbox, the
validation, the plan and the guards), the registry (reads, answered as ``capsync find``
answers them) and the event bus (Watch). Session registrations are bound to the stream
as a WebSocket's are. Status codes: INVALID_ARGUMENT with a google.rpc.BadRequest in the
details (every field path), UNAUTHENTICATED (writes need the API token in the
``authorization`` metadata), NOT_FOUND, FAILED_PRECONDITION (not pushed: remove it where
it is declared), RESOURCE_EXHAUSTED (message over the limit, too many calls or watchers,
a watcher that fell behind), UNAVAILABLE (inbox or registry cannot answer now),
DEADLINE_EXCEEDED (a write is not started once the caller's deadline has passed).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from pydantic import ValidationError

from config.errors import ConfigError, DeclarationError, InboxUnavailable, NotReady, RegistryError
from config.events import emit
from config.secrets import read_secret_bytes
from daemon import grpc_reflection_v1, query
from daemon.events import ChangeEvent, Start
from daemon.front_rules import Pace, authorized, require_token_off_loopback
from daemon.grpc_limits import Limits, Undecodable, malformed
from daemon.grpc_settings import GrpcSettings
from daemon.registrar import Registrar, refused_answer
from daemon.status import DaemonState
from discovery import full_entry, intake
from discovery.codec import Entry
from discovery.proto import registry_pb2 as pb
from discovery.proto import registry_pb2_grpc as pb_grpc
from discovery.proto_convert import as_declaration, to_proto
from discovery.wire import FieldError, FindRequest, UpdateAnswer, validation_errors

if TYPE_CHECKING:
    from daemon.front_ends import FrontEndContext

T = TypeVar("T")
SERVICE = pb.DESCRIPTOR.services_by_name["WorkerRegistry"].full_name
HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
WAIT = 0.5  # how often a stream looks whether its caller is still there
_LIST_FIELDS = {"tool": "tools", "permission": "permissions"}  # query option -> field
_ACTIONS = {
    "created": pb.Event.CREATED,
    "updated": pb.Event.UPDATED,
    "deleted": pb.Event.DELETED,
    "health": pb.Event.HEALTH,
    "withdrawn": pb.Event.WITHDRAWN,
}


class Aborted(Exception):
    """Raised by ``context.abort``: the call is over, nothing more is sent."""


def _abort(
    context: grpc.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    errors: Iterable[FieldError] = (),
) -> NoReturn:
    """End the call with ``code``; field errors go in a google.rpc.BadRequest detail."""
    violations = [
        error_details_pb2.BadRequest.FieldViolation(field=e.field, description=e.message)
        for e in errors
    ]
    details = []
    if violations:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.BadRequest(field_violations=violations))
        details.append(detail)
    context.abort_with_status(
        rpc_status.to_status(
            status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
        )
    )
    raise Aborted(message)  # abort_with_status raises; this line tells the type checker


def _invalid(context: grpc.ServicerContext, exc: intake.InvalidMessage) -> NoReturn:
    _abort(
        context,
        grpc.StatusCode.INVALID_ARGUMENT,
        str(exc),
        [FieldError(field=loc, message=msg) for loc, msg in exc.problems],
    )


class WorkerRegistry(pb_grpc.WorkerRegistryServicer):
    def __init__(self, registrar: Registrar) -> None:
        self.registrar = registrar
        self.ctx = registrar.ctx
        self._watchers = 0
        self._lock = threading.Lock()

    # Writes

    def Register(
        self, request: pb.RegisterRequest, context: grpc.ServicerContext
    ) -> pb.RegisterResponse:
        self._write_access(context)
        try:
            command = intake.command(
                as_declaration(request.capabilities),
                max_ttl=self.ctx.settings.max_ttl,
                envelope=False,
                ttl_meta=request.ttl if request.HasField("ttl") else None,
            )
        except intake.InvalidMessage as exc:
            self.registrar.invalid("grpc")
            _invalid(context, exc)
        self._write(context, lambda: self.registrar.register(command, via="grpc"))
        return pb.RegisterResponse(success=True, message="Worker registered")

    def Unregister(
        self, request: pb.UnregisterRequest, context: grpc.ServicerContext
    ) -> pb.RegisterResponse:
        self._write_access(context)
        if self._write(context, lambda: self.registrar.unregister(request.id, via="grpc")):
            return pb.RegisterResponse(success=True, message="Worker unregistered")
        if found := self._by_id(context, request.id):
            entry = found[1]
            _abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"worker {entry.id!r} comes from source {entry.source!r} ({entry.ref}), "
                "not from the push API: remove it where it is declared",
            )
        _abort(context, grpc.StatusCode.NOT_FOUND, f"no worker {request.id!r} registered")

    def Session(
        self, requests: Iterator[pb.CapabilityUpdate], context: grpc.ServicerContext
    ) -> Iterator[pb.UpdateAnswer]:
        """The seed's CapabilityUpdate messages, paced as a WebSocket's are; what it
        registers leaves ``grace`` seconds after the stream ends (closed, cut, or its
        keepalive pings unanswered)."""
        self._write_access(context)
        conn = f"grpc-{uuid.uuid4().hex}"
        self.registrar.bind(conn)
        context.add_callback(lambda: self._release(conn))
        pace = Pace(self.ctx.settings.max_messages)
        for request in requests:
            time.sleep(pace.delay(time.monotonic()))  # a client sending faster waits
            yield _answer(self._update(request, conn))

    # Reads

    def Get(self, request: pb.GetRequest, context: grpc.ServicerContext) -> pb.Worker:
        found = self._by_id(context, request.id)
        if found is None:
            _abort(context, grpc.StatusCode.NOT_FOUND, f"no worker {request.id!r} in the registry")
        return _worker(found)

    def List(self, request: pb.ListRequest, context: grpc.ServicerContext) -> pb.ListResponse:
        try:
            q = query.Query.of(
                category=request.category or None,
                tools=request.tools,
                has=request.has,
                flags=request.flags,
                meta=[f"{k}={v}" for k, v in sorted(request.meta.items())],
                all_required=request.all_required,
                verified=request.verified,
                permissions=request.permissions,
                now=int(time.time()),
                spell=lambda option: f"ListRequest.{_LIST_FIELDS.get(option, option)}",
                ignore_case=request.ignore_case,
                healthy=request.healthy,
            )
        except ValueError as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.ListResponse(workers=[_worker(found) for found in self._select(context, q)])

    def Find(self, request: pb.FindRequest, context: grpc.ServicerContext) -> pb.FindResponse:
        """The seed's FindRequest, as ``POST /workers/find`` and ``capsync find`` answer it."""
        try:
            req = FindRequest.model_validate(
                {
                    "capability_type": request.capability_type,
                    "required_tools": list(request.required_tools),
                }
            )
        except ValidationError as exc:
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "invalid FindRequest",
                validation_errors(exc),
            )
        q = query.Query.seed_find(req, int(time.time()))
        return pb.FindResponse(workers=[to_proto(caps) for _, _, caps in self._select(context, q)])

    def Watch(
        self, request: pb.WatchRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchMessage]:
        """A snapshot (or the events after ``since``), then one event per change, until
        the caller goes away or its deadline passes."""
        with self._lock:
            if self._watchers >= self.ctx.settings.max_watchers:
                _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "too many watchers")
            self._watchers += 1
        since = request.since if request.HasField("since") else None
        start, subscription = self.ctx.bus.subscribe(since, stream=request.stream or None)
        if not context.add_callback(lambda: self._unwatch(subscription.close)):
            self._unwatch(subscription.close)  # already over: no callback will come
            return
        yield from _start_messages(start)
        while context.is_active():
            for event in subscription.wait(WAIT):
                yield pb.WatchMessage(event=_event(event))
            if subscription.dropped:
                _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, subscription.dropped)

    # Helpers

    def _write_access(self, context: grpc.ServicerContext) -> None:
        header = dict(context.invocation_metadata()).get("authorization")
        if not authorized(header if isinstance(header, str) else None, self.ctx.token):
            _abort(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                "writes need the API token: metadata authorization: Bearer <token>",
            )

    def _write(self, context: grpc.ServicerContext, call: Callable[[], T]) -> T:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            _abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed: not written")
        try:
            return call()
        except NotReady as exc:
            context.set_trailing_metadata((("retry-after", "1"),))
            _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        except InboxUnavailable as exc:
            _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))

    def _select(self, context: grpc.ServicerContext, q: query.Query) -> list[query.Decoded]:
        registry = self.ctx.registry()
        if registry is None:
            _abort(context, grpc.StatusCode.UNAVAILABLE, "the registry is not open yet")
        try:
            return query.select(registry, q)
        except RegistryError as exc:
            _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))

    def _by_id(self, context: grpc.ServicerContext, worker_id: str) -> query.Decoded | None:
        return next(
            (
                found
                for found in self._select(context, query.Query())
                if found[1].id.lower() == worker_id.lower()
            ),
            None,
        )

    def _update(self, request: pb.CapabilityUpdate | Undecodable, conn: str) -> UpdateAnswer:
        if isinstance(request, Undecodable):
            return UpdateAnswer(
                ok=False,
                message="malformed message",
                errors=[FieldError(field="", message=malformed(request))],
            )
        message: dict[str, Any] = {
            "action": pb.CapabilityUpdate.Action.Name(request.action).title(),
            "capabilities": as_declaration(request.capabilities),
        }
        if request.HasField("ttl"):
            message["ttl"] = request.ttl
        try:
            command = intake.command(message, max_ttl=self.ctx.settings.max_ttl, envelope=True)
        except intake.InvalidMessage as exc:
            self.registrar.invalid("grpc")
            return refused_answer(exc)
        return self.registrar.apply(command, via="grpc", conn=conn)

    def _release(self, conn: str) -> None:
        try:
            self.registrar.release(conn)
        except InboxUnavailable as exc:
            # The registrations' own expiry (renewed until now) still applies.
            emit(logging.WARNING, "lease_release_failed", error=str(exc))

    def _unwatch(self, close: Callable[[], None]) -> None:
        close()
        with self._lock:
            self._watchers -= 1


class Health(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """grpc.health.v1: SERVING exactly when /readyz answers 200 (the overall server, "",
    and capsync.v1.WorkerRegistry); any other service is unknown."""

    def __init__(self, state: DaemonState) -> None:
        self.state = state

    def _status(self, service: str) -> Any:
        if service not in ("", SERVICE):
            return health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        return (
            health_pb2.HealthCheckResponse.SERVING
            if self.state.ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:
        status = self._status(request.service)
        if status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN:
            _abort(context, grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    def Watch(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        last = None
        stopped = threading.Event()
        context.add_callback(stopped.set)
        while not stopped.is_set() and context.is_active():
            if (status := self._status(request.service)) != last:
                last = status
                yield health_pb2.HealthCheckResponse(status=status)
            stopped.wait(WAIT)


class GrpcApi:
    def __init__(self, settings: GrpcSettings, state: DaemonState, registrar: Registrar) -> None:
        listen = settings.listen
        require_token_off_loopback("grpc.listen", listen, registrar.ctx.token)
        api = registrar.ctx.settings
        keepalive_ms = int(api.ping_interval * 1000)
        self.server = grpc.server(
            ThreadPoolExecutor(max_workers=settings.max_rpcs, thread_name_prefix="grpc"),
            interceptors=[Limits(SERVICE, settings.max_open_streams)],
            maximum_concurrent_rpcs=settings.max_rpcs,
            options=[
                ("grpc.max_receive_message_length", api.max_body),
                ("grpc.keepalive_time_ms", keepalive_ms),
                ("grpc.keepalive_timeout_ms", keepalive_ms),
                ("grpc.so_reuseport", 0),
            ],
        )
        pb_grpc.add_WorkerRegistryServicer_to_server(  # type: ignore[no-untyped-call]
            WorkerRegistry(registrar), self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(Health(state), self.server)
        grpc_reflection_v1.enable((SERVICE, HEALTH), self.server)
        try:
            port = (
                self.server.add_secure_port(listen, _credentials(settings))
                if settings.cert_file
                else self.server.add_insecure_port(listen)
            )
        except RuntimeError as exc:
            raise ConfigError(f"grpc.listen {listen}: cannot bind: {exc}") from None
        if not port:
            raise ConfigError(f"grpc.listen {listen}: cannot bind")
        self.address = f"{listen.rpartition(':')[0]}:{port}"

    def start(self) -> GrpcApi:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(grace=2).wait(5)

    def status(self) -> dict[str, Any]:
        return {"address": self.address}


def build(ctx: FrontEndContext) -> GrpcApi:
    """The front-end table's entry point (daemon/front_ends.py)."""
    return GrpcApi(GrpcSettings.of(ctx.settings), ctx.state, ctx.registrar)


def _credentials(settings: GrpcSettings) -> grpc.ServerCredentials:
    def read(key: str, path: Path | None) -> bytes | None:
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"grpc.{key} {path}: {exc.strerror}") from None

    ca = read("client_ca_file", settings.client_ca_file)
    key = read_secret_bytes(settings.key_file, "grpc.key_file") if settings.key_file else None
    pair = (key, read("cert_file", settings.cert_file))
    return grpc.ssl_server_credentials(
        [pair], root_certificates=ca, require_client_auth=ca is not None
    )


def _start_messages(start: Start) -> Iterator[pb.WatchMessage]:
    if start.snapshot:
        entries = [
            (registry, worker_id, entry)
            for registry, view in start.entries.items()
            for worker_id, entry in sorted(view.items())
        ]
        yield pb.WatchMessage(
            snapshot=pb.Snapshot(stream=start.stream, sequence=start.sequence, entries=len(entries))
        )
        for registry, worker_id, entry in entries:
            yield pb.WatchMessage(entry=_entry(registry, worker_id, entry))
    else:
        yield pb.WatchMessage(resumed=pb.Resumed(stream=start.stream, sequence=start.sequence))
    for event in start.events:
        yield pb.WatchMessage(event=_event(event))


def _event(event: ChangeEvent) -> pb.Event:
    return pb.Event(
        sequence=event.sequence,
        action=_ACTIONS[event.action],
        entry=_entry(event.registry, event.id, event.entry),
    )


def _entry(registry: str, worker_id: str, entry: Entry) -> pb.Entry:
    message = pb.Entry(
        registry=registry,
        id=worker_id,
        source=entry.source,
        ref=entry.ref,
        owner=entry.owner,
        health=_health(entry),
    )
    try:
        message.declaration.CopyFrom(to_proto(full_entry.decode(entry)))
    except DeclarationError:
        message.ClearField("declaration")
    return message


def _health(entry: Entry) -> pb.Health:
    return pb.Health(status=entry.health.status, output=entry.health.output)


def _worker(found: query.Decoded) -> pb.Worker:
    node, entry, caps = found
    return pb.Worker(
        capabilities=to_proto(caps),
        node=node,
        owner=entry.owner,
        source=entry.source,
        ref=entry.ref,
        address=entry.address,
        health=_health(entry),
    )


def _answer(answer: UpdateAnswer) -> pb.UpdateAnswer:
    action = answer.action.upper() if answer.action else "ACTION_UNSPECIFIED"
    return pb.UpdateAnswer(
        ok=answer.ok,
        action=action,
        id=answer.id or "",
        message=answer.message,
        errors=[pb.FieldError(field=e.field, message=e.message) for e in answer.errors],
    )
