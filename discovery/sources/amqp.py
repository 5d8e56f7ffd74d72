"""The ``amqp`` source: workers announce themselves on a RabbitMQ queue, the seed's
``worker.capabilities`` (default exchange, routing key = queue name, body = the
declaration JSON), and capsync is the coordinator that consumes it.

A message body is a declaration (register or update; an optional lease in the header
``ttl``, seconds), or the WebSocket's envelope ``{"action": "Register" | "Update" |
"Unregister", "capabilities": {...}, "ttl": N}``. Registrations go into this source's
own inbox (the push source's store: SQLite in the state directory, Consul KV with leader
election) and are listed from it like the push source's, so a broker outage deletes
nothing: the inbox keeps serving the last known registrations.

Delivery is at-least-once: a message is acknowledged only after its registration is
durable in the inbox (registrations are stored in batches of up to ``prefetch``, then
acknowledged together). Storing is idempotent by id and content: a redelivered message
changes nothing. When the inbox cannot be written the connection is dropped, so the
unacknowledged messages go back to the queue, and it reconnects with backoff.

A message that fails validation is published, with the reason in the header
``x-capsync-reason``, to the dead-letter queue capsync declares (``<queue>.invalid``),
confirmed by the broker, then acknowledged: never redelivered in a loop. Publishing it
(rather than rejecting it into the queue's dead-letter exchange) works whatever the queue
was declared with: a queue that already exists without ``x-dead-letter-*`` arguments, or
one used ``passive``-ly, cannot be given them (RabbitMQ refuses a declaration whose
arguments differ), and a broker-side dead-letter cannot carry the reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from config.events import emit
from config.settings import (
    AmqpConnection,
    Duration,
    SourceName,
    in_state_directory,
    redact_url,
)
from discovery import amqp_link, intake, lease
from discovery.backoff import Backoff
from discovery.documents import MAX_DOCUMENT_BYTES
from discovery.inbox import Inbox, Observer, Registration
from discovery.kinds import BuildContext, Kind, field_arg
from discovery.sources.inbox import InboxSettings, PushSource, open_inbox

VIA = "amqp"
REASON = "x-capsync-reason"
MAX_REASON = 1000
IDLE = 0.05  # seconds without a message before a partial batch is stored


class Invalid(Exception):
    """A message that can never be registered: it goes to the dead-letter queue."""


def decode(body: bytes, headers: Mapping[str, Any] | None, *, max_ttl: float) -> intake.Command:
    """A message body (and its ``ttl`` header) -> what it asks for, through the one
    intake; Invalid with the reason (every field path) otherwise."""
    try:
        return intake.read(
            body,
            limit=MAX_DOCUMENT_BYTES,
            max_ttl=max_ttl,
            envelope=None,
            ttl_meta=(headers or {}).get("ttl"),
        )
    except intake.InvalidMessage as exc:
        raise Invalid(str(exc)) from None
    except Exception as exc:  # a surprise in decoding is this message's, never a loop
        raise Invalid(f"could not be decoded: {_describe(exc)}") from exc


@dataclass
class ConsumerStats:
    """What /status and the metrics show: the consumer's state and its counters."""

    queue: str
    state: str = "starting"
    consumed: int = 0
    rejected: int = 0
    redelivered: int = 0
    last_error: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, **increments: int) -> None:
        with self._lock:
            for name, value in increments.items():
                setattr(self, name, getattr(self, name) + value)

    def as_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "queue": self.queue,
                "state": self.state,
                "consumed": self.consumed,
                "rejected": self.rejected,
                "redelivered": self.redelivered,
                "last_error": self.last_error,
            }


class AmqpSourceSettings(InboxSettings, AmqpConnection):
    """Consume ``queue`` (declared durable, or only checked with ``passive``); invalid
    messages to ``dead_letter`` (default ``<queue>.invalid``); at most ``prefetch``
    messages unacknowledged."""

    type: Literal["amqp"]
    name: SourceName = "amqp"
    path: Path = in_state_directory("amqp-inbox.db")
    kv_prefix: str = "capsync/amqp-inbox"
    queue: str = Field("worker.capabilities", min_length=1, max_length=255)
    passive: bool = False
    dead_letter: str | None = Field(None, min_length=1, max_length=255)
    prefetch: int = Field(200, ge=1, le=10_000)
    max_ttl: Duration = 86400.0


@dataclass
class AmqpSource(PushSource):
    settings: AmqpSourceSettings = field(kw_only=True)
    stats: ConsumerStats = field(init=False)

    def __post_init__(self) -> None:
        self.stats = ConsumerStats(self.settings.queue)

    @property
    def dead_letter(self) -> str:
        return self.settings.dead_letter or f"{self.settings.queue}.invalid"

    def watch(self, notify: Callable[[str], None], stop: threading.Event) -> None:
        """Consume until ``stop`` (reconnecting with backoff), and beside it the push
        source's watch: leases that run out ask for a cycle."""
        leases = threading.Thread(
            target=super().watch, args=(notify, stop), name=f"leases-{self.name}", daemon=True
        )
        leases.start()
        self.consume(notify, stop)
        leases.join(timeout=5)

    def consume(self, notify: Callable[[str], None], stop: threading.Event) -> None:
        backoff = amqp_link.reconnect_backoff()
        failures = amqp_link.failures()
        while not stop.is_set():
            self.stats.state = "connecting"
            try:
                self._session(notify, stop, backoff)
            except Exception as exc:  # a peer or the store never ends the consumer
                wait = backoff.next()
                kind = "disconnected" if isinstance(exc, failures) else "failing"
                self.stats.state, self.stats.last_error = kind, _describe(exc)
                emit(
                    logging.WARNING,
                    "amqp_consumer_down",
                    source=self.name,
                    url=redact_url(self.settings.url),
                    error=self.stats.last_error,
                    retry=f"{wait:g}s",
                )
                stop.wait(wait)
        self.stats.state = "stopped"

    def _session(
        self, notify: Callable[[str], None], stop: threading.Event, backoff: Backoff
    ) -> None:
        settings = self.settings
        connection = amqp_link.connect(settings, f"capsync source {self.name}")
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            channel.queue_declare(self.dead_letter, durable=True)
            channel.queue_declare(settings.queue, durable=True, passive=settings.passive)
            channel.basic_qos(prefetch_count=settings.prefetch)
            self.stats.state, self.stats.last_error = "consuming", ""
            backoff.reset()
            emit(
                logging.INFO,
                "amqp_consuming",
                source=self.name,
                queue=settings.queue,
                url=redact_url(settings.url),
            )
            batch = Batch(
                inbox=self.inbox,
                channel=channel,
                stats=self.stats,
                notify=notify,
                clock=self.clock,
                observe=self.observe,
                dead_letter=lambda received, reason: self._dead_letter(
                    channel, received.properties, received.body, reason
                ),
            )
            for method, properties, body in channel.consume(
                settings.queue, inactivity_timeout=IDLE
            ):
                if method is None:
                    batch.flush()
                    if stop.is_set():
                        break
                    continue
                if method.redelivered:
                    self.stats.count(redelivered=1)
                self._handle(batch, channel, method, properties, body)
                if len(batch) >= settings.prefetch or stop.is_set():
                    batch.flush()
                if stop.is_set():
                    break
            batch.flush()
        finally:
            if connection.is_open:
                try:
                    connection.close()
                except amqp_link.failures():
                    pass  # closing what is already broken: the broker requeues

    def _handle(
        self, batch: Batch, channel: Any, method: Any, properties: Any, body: bytes
    ) -> None:
        received = time.monotonic()
        try:
            command = decode(body, properties.headers, max_ttl=self.settings.max_ttl)
        except Invalid as exc:
            batch.flush()  # everything before it is stored and acknowledged first
            self._dead_letter(channel, properties, body, str(exc))
            channel.basic_ack(method.delivery_tag)
            self.observe(VIA, "register", "invalid", time.monotonic() - received)
            return
        if command.action != "unregister":
            batch.add(method.delivery_tag, command, Received(properties, body, received))
            return
        batch.flush()
        removed = self.inbox.remove(command.id)
        channel.basic_ack(method.delivery_tag)
        self.stats.count(consumed=1)
        outcome = "ok" if removed else "not_found"
        self.observe(VIA, "unregister", outcome, time.monotonic() - received)
        if removed:
            batch.notify(f"amqp: unregistered {command.id}")

    def _dead_letter(self, channel: Any, properties: Any, body: bytes, reason: str) -> None:
        """Publish a message that can never be stored to the dead-letter queue, unchanged,
        with the reason (the caller acknowledges it)."""
        headers = {
            **(properties.headers or {}),
            REASON: reason[:MAX_REASON],
            "x-capsync-queue": self.settings.queue,
        }
        channel.basic_publish("", self.dead_letter, body, amqp_link.persistent(headers))
        self.stats.count(rejected=1)
        emit(
            logging.WARNING,
            "amqp_rejected",
            source=self.name,
            queue=self.settings.queue,
            dead_letter=self.dead_letter,
            reason=reason[:200],
        )


@dataclass(frozen=True)
class Received:
    """A message as it came: what the dead-letter queue is given."""

    properties: Any
    body: bytes
    at: float  # time.monotonic() when it arrived


@dataclass(kw_only=True)
class Batch:
    """Registrations received but not yet acknowledged: stored in one inbox write, then
    acknowledged with one ``multiple`` ack. Those equal to what the inbox holds are not
    written again (a redelivery changes nothing). Each message is observed from its
    receipt to its acknowledgement.

    When the write fails, each registration is written alone: one the store refuses
    while it answers otherwise is dead-lettered with the reason (never redelivered in a
    loop); when the store does not answer at all, the failure ends the session and the
    broker requeues them (nothing lost, retried with backoff)."""

    inbox: Inbox
    channel: Any
    stats: ConsumerStats
    notify: Callable[[str], None]
    clock: Callable[[], float]
    observe: Observer
    dead_letter: Callable[[Received, str], None]
    _tag: int = 0
    _pending: dict[str, tuple[intake.Command, Received]] = field(default_factory=dict)
    _received: list[float] = field(default_factory=list)  # when each message arrived

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, tag: int, command: intake.Command, received: Received) -> None:
        key = command.id.lower()  # ids compare case-insensitively, as the inbox's keys
        self._pending.pop(key, None)  # the latest of one id wins, in order
        self._pending[key] = (command, received)
        self._received.append(received.at)
        self._tag = tag

    def flush(self) -> None:
        if not self._pending:
            return
        received, self._received = self._received, []
        try:
            changed, dead = self._store(list(self._pending.values()))
        except Exception:  # the store does not answer: the broker redelivers them
            self._observed(received, "unavailable")
            raise
        self.channel.basic_ack(self._tag, multiple=True)
        self.stats.count(consumed=len(received) - dead)
        self._pending.clear()
        self._observed(received[dead:], "ok")
        self._observed(received[:dead], "error")
        if changed:
            more = f" (+{len(changed) - 1} more)" if len(changed) > 1 else ""
            self.notify(f"amqp: registered {changed[0][0].id}{more}")

    def _store(
        self, pending: list[tuple[intake.Command, Received]]
    ) -> tuple[list[tuple[Registration, Received]], int]:
        """Write what changed under the lease rule: what was stored, and how many
        messages the store refused (dead-lettered)."""
        now, changed = self.clock(), []
        for command, message in pending:
            old = self.inbox.get(command.id)
            new = lease.registration(command, via=VIA, now=now, old=old)
            if new != old:
                changed.append((new, message))
        try:
            self.inbox.put([new for new, _ in changed])
        except Exception:  # which one? each alone
            stored = self._one_by_one(changed)
            return stored, len(changed) - len(stored)
        return changed, 0

    def _one_by_one(
        self, changed: list[tuple[Registration, Received]]
    ) -> list[tuple[Registration, Received]]:
        """Write each alone; dead-letter those the store refuses while it answers."""
        stored = []
        for new, received in changed:
            try:
                self.inbox.put([new])
            except Exception as exc:
                self.inbox.get(new.id)  # the store does not answer: end the session
                self.dead_letter(received, f"storing failed: {_describe(exc)}")
                continue
            stored.append((new, received))
        return stored

    def _observed(self, received: list[float], outcome: str) -> None:
        done = time.monotonic()
        for at in received:
            self.observe(VIA, "register", outcome, done - at)


def _describe(exc: Exception) -> str:
    return amqp_link.describe(exc)


def build(settings: AmqpSourceSettings, ctx: BuildContext) -> AmqpSource:
    # A missing extra, password file or TLS file fails at start-up (or the reload), named.
    amqp_link.parameters(settings, "check")
    return AmqpSource(
        open_inbox(settings, ctx), name=settings.name, settings=settings, clock=time.time
    )


KIND = Kind("amqp", AmqpSourceSettings, "[URL]", field_arg("url", required=False), build)
