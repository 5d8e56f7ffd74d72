"""What every push front end does with a registration, whatever its protocol: validate it,
store it in the inbox (durably, before it is acknowledged), and ask for a prompt cycle.
REST and WebSocket use it today; gRPC and AMQP are handed the same object.

Registrations bound to a connection (a WebSocket, a gRPC stream) carry an expiry of
``grace`` seconds that ``renew_bound`` extends while the connection lives; when it ends,
``release`` sets the expiry to ``grace`` from then (the ``Renewer`` thread renews for
every front end at once), so the entries leave after the grace
period unless the worker registers them again (a daemon restart or a network blip does
not flap the registry).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from config.errors import DeclarationError, SourceError
from config.events import emit
from config.settings import ApiSettings
from daemon.events import EventBus
from daemon.registry.base import Registry
from discovery import schema
from discovery.inbox import Inbox, Observer, Registration, unobserved
from discovery.model import Capabilities

T = TypeVar("T")
MISSING_SOURCE = (
    'no push source is configured: add [[sources]] type = "push" (or '
    "--source push:PATH) so that pushed registrations are synced"
)


class PushUnavailable(Exception):
    """The inbox cannot take the registration now (no push source, store failing)."""


@dataclass
class PushContext:
    """What the front ends are handed: the current inbox and registry (a reload replaces
    them), the cycle's trigger, the event bus, the API settings and the write token."""

    inbox: Callable[[], Inbox | None]
    registry: Callable[[], Registry | None]
    request: Callable[[str], None]
    bus: EventBus
    settings: ApiSettings
    token: str | None = None
    clock: Callable[[], float] = time.time
    observe: Observer = unobserved


@dataclass
class _Call:
    outcome: str = "ok"


@dataclass
class Registrar:
    ctx: PushContext
    _bound: set[str] = field(default_factory=set)  # live connections
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def register(
        self, body: Any, *, via: str, ttl: float | None = None, conn: str | None = None
    ) -> Capabilities:
        """Validate and store; DeclarationError (nothing stored) or PushUnavailable."""
        with self._observed(via, "register"):
            return self._register(body, via=via, ttl=ttl, conn=conn)

    def _register(
        self, body: Any, *, via: str, ttl: float | None, conn: str | None
    ) -> Capabilities:
        caps = schema.validate(body, ref=via)
        now = self.ctx.clock()
        if ttl is not None and ttl > self.ctx.settings.max_ttl:
            raise DeclarationError(
                via, [("ttl", f"must be at most {self.ctx.settings.max_ttl:g} seconds")]
            )
        expires = now + ttl if ttl is not None else None
        if conn is not None:
            grace = now + self.ctx.settings.grace
            expires = grace if expires is None else max(expires, grace)
        self._store(lambda inbox: inbox.put([Registration(caps.id, body, via, expires, conn)]))
        self.ctx.request(f"push: {via} registered {caps.id}")
        return caps

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
        except DeclarationError:
            call.outcome = "invalid"
            raise
        except PushUnavailable:
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
        until = self.ctx.clock() + self.ctx.settings.grace
        self._store(lambda inbox: inbox.renew([conn], until))

    def _store(self, action: Callable[[Inbox], T]) -> T:
        inbox = self.ctx.inbox()
        if inbox is None:
            raise PushUnavailable(MISSING_SOURCE)
        try:
            return action(inbox)
        except SourceError as exc:
            raise PushUnavailable(str(exc)) from exc


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
            except PushUnavailable as exc:
                emit(logging.WARNING, "lease_renewal_failed", error=str(exc))
