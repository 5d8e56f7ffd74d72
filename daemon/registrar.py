"""What every push front end does with a registration, whatever its protocol: store the
command ``discovery.intake`` decoded in the inbox (durably, before it is acknowledged),
and ask for a prompt cycle. REST, WebSocket and gRPC are handed the same object.

The lease rule is ``discovery.lease``; the ``Renewer`` thread renews the registrations
of every live connection at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from config.errors import InboxUnavailable, NotReady, SourceError
from config.events import emit
from daemon.api_settings import ApiSettings
from daemon.events import EventBus
from daemon.registry.base import Registry
from discovery import lease
from discovery.inbox import Inbox, Observer, Registration, unobserved
from discovery.intake import Command, InvalidMessage
from discovery.model import Capabilities
from discovery.wire import FieldError, UpdateAnswer

T = TypeVar("T")
NOT_READY = "not ready yet: the daemon is starting; retry in a moment"
RETRY_AFTER = 1  # seconds, the Retry-After of a registration that came too early
MISSING_SOURCE = (
    'no push source is configured: add [[sources]] type = "push" (or '
    "--source push:PATH) so that pushed registrations are synced"
)


@dataclass
class RegistrationContext:
    """What the front ends are handed: the current inbox and registry (a reload replaces
    them), the cycle's trigger, the event bus, the API settings and the write token.
    ``started`` is false until the sources are built (``inbox`` cannot answer yet)."""

    inbox: Callable[[], Inbox | None]
    registry: Callable[[], Registry | None]
    request: Callable[[str], None]
    bus: EventBus
    settings: ApiSettings
    token: str | None = None
    clock: Callable[[], float] = time.time
    started: Callable[[], bool] = lambda: True
    observe: Observer = unobserved


@dataclass
class _Call:
    outcome: str = "ok"


@dataclass
class Registrar:
    ctx: RegistrationContext
    _bound: set[str] = field(default_factory=set)  # live connections
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _write: threading.Lock = field(default_factory=threading.Lock)  # read-then-write

    def register(self, command: Command, *, via: str, conn: str | None = None) -> Capabilities:
        """Store a decoded register or update under the lease rule; InboxUnavailable when
        the inbox cannot take it (nothing stored)."""
        with self._observed(via, "register"):
            return self._register(command, via=via, conn=conn)

    def invalid(self, via: str) -> None:
        """A registration the intake refused (nothing stored), counted like every call."""
        self.ctx.observe(via, "register", "invalid", 0.0)

    def _register(self, command: Command, *, via: str, conn: str | None) -> Capabilities:
        assert command.caps is not None
        settings = self.ctx.settings

        def store(inbox: Inbox) -> None:
            with self._write:  # read, then write: two front ends never interleave
                old = inbox.get(command.id)
                new = lease.registration(
                    command,
                    via=via,
                    now=self.ctx.clock(),
                    old=old,
                    connection=None if conn is None else lease.Connection(conn, settings.grace),
                )
                inbox.put([new])

        self._store(store)
        self.ctx.request(f"push: {via} registered {command.id}")
        return command.caps

    def apply(self, command: Command, *, via: str, conn: str) -> UpdateAnswer:
        """A decoded message from a connection (WebSocket, gRPC Session) -> its answer;
        never raises for what a client sends."""
        action = command.action.title()
        try:
            if command.action == "unregister":
                if not self.unregister(command.id, via=via):
                    return UpdateAnswer(
                        ok=False,
                        action=action,
                        id=command.id,
                        message="not registered through the push API",
                    )
            elif command.action == "update" and self.registered(command.id) is None:
                return UpdateAnswer(
                    ok=False,
                    action=action,
                    id=command.id,
                    message="not registered: send Register first",
                )
            else:
                self.register(command, via=via, conn=conn)
        except InboxUnavailable as exc:
            return UpdateAnswer(ok=False, action=action, id=command.id, message=str(exc))
        return UpdateAnswer(ok=True, action=action, id=command.id)

    def unregister(self, worker_id: str, *, via: str) -> bool:
        with self._observed(via, "unregister") as call:
            removed = self._store(lambda inbox: inbox.remove(worker_id))
            if removed:
                self.ctx.request(f"push: {via} unregistered {worker_id}")
            else:
                call.outcome = "not_found"
            return removed

    @contextmanager
    def _observed(self, via: str, operation: str) -> Iterator[_Call]:
        """Time one call and name its outcome, the same for every front end."""
        started = time.monotonic()
        call = _Call()
        try:
            yield call
        except InboxUnavailable:
            call.outcome = "unavailable"
            raise
        except Exception:
            call.outcome = "error"
            raise
        finally:
            self.ctx.observe(via, operation, call.outcome, time.monotonic() - started)

    def registered(self, worker_id: str) -> Registration | None:
        return self._store(lambda inbox: inbox.get(worker_id))

    def bind(self, conn: str) -> None:
        with self._lock:
            self._bound.add(conn)

    def renew_bound(self) -> None:
        """Extend the registrations of every live connection by the grace period."""
        with self._lock:
            conns = list(self._bound)
        if conns:
            until = self.ctx.clock() + self.ctx.settings.grace
            self._store(lambda inbox: inbox.renew(conns, until))

    def release(self, conn: str) -> None:
        """The connection ended: its registrations leave ``grace`` seconds from now."""
        with self._lock:
            self._bound.discard(conn)
        now = self.ctx.clock()
        until = now + self.ctx.settings.grace
        self._store(lambda inbox: inbox.release(conn, now, until))

    def _store(self, action: Callable[[Inbox], T]) -> T:
        if not self.ctx.started():
            raise NotReady(NOT_READY)
        inbox = self.ctx.inbox()
        if inbox is None:
            raise InboxUnavailable(MISSING_SOURCE)
        try:
            return action(inbox)
        except SourceError as exc:
            raise InboxUnavailable(str(exc)) from exc


def refused_answer(exc: InvalidMessage) -> UpdateAnswer:
    """A message the intake refused, as a connection's answer: every field path."""
    return UpdateAnswer(
        ok=False,
        message=exc.message,
        errors=[FieldError(field=loc, message=msg) for loc, msg in exc.problems],
    )


class Renewer:
    """Extends the registrations of every live connection (WebSocket, gRPC Session),
    three times per grace period, in one inbox write for all of them."""

    def __init__(self, registrar: Registrar) -> None:
        self.registrar = registrar
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="push-leases", daemon=True)

    def start(self) -> Renewer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.registrar.ctx.settings.grace / 3):
            try:
                self.registrar.renew_bound()
            except InboxUnavailable as exc:
                emit(logging.WARNING, "lease_renewal_failed", error=str(exc))
