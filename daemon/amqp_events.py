"""The change-event publisher: every event of the bus (one per created, updated or deleted
entry, after each successful apply) to a durable RabbitMQ topic exchange,
``worker.capabilities.events`` by default.

Routing key ``<action>.<service>`` (``created.worker``, ``deleted.worker``,
``health.worker`` when only the worker's health status changed, ``withdrawn.worker``);
the body is the watch stream's event message, with the same sequence numbers, plus the bus's
``stream`` (a new one at each daemon start)::

    {"type": "event", "stream": S, "sequence": N, "action": "created", "registry": R,
     "id": ID, "source": ..., "ref": ..., "owner": ..., "declaration": {...}}

Messages are persistent and sent with publisher confirms. Events first go into a bounded
durable outbox (SQLite in the state directory), in order, and leave it only once the
broker confirmed them: events produced while the broker is away, or before a restart of
the daemon, go out in order when it is back. When the outbox is full the oldest events
are dropped, and the drop is logged and counted (subscribers resynchronise from the
registry, or from the watch's snapshot).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from config.errors import ConfigError
from config.events import emit
from config.settings import redact_url
from daemon.amqp_events_settings import AmqpEventsSettings
from daemon.events import ChangeEvent, EventBus, Subscription
from discovery import amqp_link

WAIT = 0.5  # seconds between two looks at the bus while the broker is away
TICK = 0.1  # seconds between two looks at the bus while connected
WINDOW = 1000  # events sent and not yet confirmed
STOP_GRACE = 5.0  # seconds a stopping publisher waits for the confirms in flight


def routing_key(event: ChangeEvent) -> str:
    return f"{event.action}.{event.entry.service}"


def message(stream: str, event: ChangeEvent) -> str:
    return json.dumps({"type": "event", "stream": stream, **event.as_json()}, separators=(",", ":"))


class Outbox:
    """Events waiting for the broker's confirm, oldest first; at most ``limit`` of them.
    One SQLite file."""

    def __init__(self, path: Any, limit: int) -> None:
        self.path, self.limit = path, limit
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Opened where the daemon starts (a bad path fails start-up), used by the
            # publisher's thread only.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY "
                "AUTOINCREMENT, key TEXT NOT NULL, body TEXT NOT NULL)"
            )
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"amqp_events.outbox {path}: {exc}") from None

    def append(self, rows: list[tuple[str, str]]) -> int:
        """Add (routing key, body) rows; how many of the oldest were dropped to fit."""
        with self._db:
            self._db.executemany("INSERT INTO outbox (key, body) VALUES (?, ?)", rows)
            over = len(self) - self.limit
            if over > 0:
                self._db.execute(
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)",
                    (over,),
                )
        return max(over, 0)

    def after(self, seq: int, count: int) -> list[tuple[int, str, str]]:
        """The oldest ``count`` events after outbox sequence ``seq``: (seq, key, body)."""
        return self._db.execute(
            "SELECT seq, key, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (seq, count)
        ).fetchall()

    def remove_through(self, seq: int) -> None:
        with self._db:
            self._db.execute("DELETE FROM outbox WHERE seq <= ?", (seq,))

    def __len__(self) -> int:
        count: int = self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        return count

    def close(self) -> None:
        self._db.close()


@dataclass
class PublisherStats:
    exchange: str
    state: str = "starting"
    published: int = 0
    dropped: int = 0
    outbox: int = 0
    last_error: str = ""

    def as_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class EventPublisher:
    """Started and stopped by the daemon; owns its thread, its outbox and its connection."""

    bus: EventBus
    settings: AmqpEventsSettings
    stats: PublisherStats = field(init=False)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _subscription: Subscription = field(init=False)

    def __post_init__(self) -> None:
        self.stats = PublisherStats(self.settings.exchange)
        # A missing extra, password file or TLS file fails at start-up, named.
        amqp_link.parameters(self.settings, "check")

    def start(self) -> EventPublisher:
        outbox = Outbox(self.settings.outbox, self.settings.outbox_max)
        self.stats.outbox = len(outbox)  # what the last run left
        self._thread = threading.Thread(
            target=self._run, args=(outbox,), name="amqp-events", daemon=True
        )
        self._thread.start()
        return self

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self, outbox: Outbox) -> None:
        self._subscription = self._subscribe()
        backoff = amqp_link.reconnect_backoff()
        try:
            while not self._stop.is_set():
                session = Session(self, outbox)
                error = session.run()
                if self._stop.is_set():
                    break
                if session.ready:
                    backoff.reset()
                wait = backoff.next()
                self.stats.state, self.stats.last_error = "disconnected", error[:500]
                emit(
                    logging.WARNING,
                    "amqp_events_down",
                    url=redact_url(self.settings.url),
                    error=self.stats.last_error,
                    waiting=len(outbox),
                    retry=f"{wait:g}s",
                )
                deadline = time.monotonic() + wait
                while not self._stop.is_set() and time.monotonic() < deadline:
                    self.collect(outbox, min(WAIT, deadline - time.monotonic()))
            self.collect(outbox, 0)  # kept in the outbox for the next start
        finally:
            self._subscription.close()
            outbox.close()
            self.stats.state = "stopped"

    def collect(self, outbox: Outbox, timeout: float) -> None:
        """Move the bus's events into the outbox (waiting up to ``timeout`` for some)."""
        subscription = self._subscription
        events = subscription.wait(timeout) if timeout > 0 else subscription.drain()
        try:
            self._take(outbox, events)
        except sqlite3.Error as exc:  # the outbox's disk
            self.stats.state, self.stats.last_error = "failing", f"outbox: {exc}"
            emit(
                logging.ERROR,
                "amqp_outbox_failed",
                path=str(self.settings.outbox),
                error=str(exc),
                lost=len(events),
            )
        if subscription.dropped:
            emit(logging.WARNING, "amqp_events_lost", reason=subscription.dropped)
            subscription.close()
            self._subscription = self._subscribe()

    def _subscribe(self) -> Subscription:
        """Its queue is emptied into the outbox at every turn of the loop; the outbox is
        the bound (one cycle's events may be more than the bus's default queue)."""
        return self.bus.subscribe(wakeup=lambda: None, limit=sys.maxsize)[1]

    def _take(self, outbox: Outbox, events: list[ChangeEvent]) -> None:
        if not events:
            return
        dropped = outbox.append([(routing_key(e), message(self.bus.stream, e)) for e in events])
        if dropped:
            self.stats.dropped += dropped
            emit(
                logging.WARNING,
                "amqp_outbox_full",
                dropped=dropped,
                limit=self.settings.outbox_max,
                action="the oldest events were dropped; subscribers resynchronise from "
                "the registry",
            )
        self.stats.outbox = len(outbox)


class Session:
    """One connection (pika's asynchronous adapter, in the publisher's thread): events go
    out in outbox order, up to ``WINDOW`` unconfirmed at a time, and leave the outbox as
    the broker confirms them. A nack, a closed channel or a lost connection ends the
    session; the next one sends again from the oldest event still in the outbox (so a
    subscriber may see an event twice after an outage: ``stream`` and ``sequence`` tell)."""

    def __init__(self, publisher: EventPublisher, outbox: Outbox) -> None:
        self.publisher, self.outbox = publisher, outbox
        self.settings, self.stats = publisher.settings, publisher.stats
        self.ready = False
        self.error = ""
        self._connection: Any = None
        self._channel: Any = None
        self._tag = 0
        self._sent_through = 0  # the outbox sequence of the last event sent
        self._inflight: dict[int, int] = {}  # delivery tag -> outbox sequence, in order
        self._confirmed: set[int] = set()
        self._stopping_since = 0.0

    def run(self) -> str:
        """Until the connection ends; the reason it ended ("" when stopped)."""
        pika = amqp_link.pika_module()
        failures: tuple[type[BaseException], ...] = (
            *amqp_link.failures(),
            ConfigError,
            sqlite3.Error,
        )
        try:
            self._connection = pika.SelectConnection(
                amqp_link.parameters(self.settings, "capsync change events"),
                on_open_callback=self._opened,
                on_open_error_callback=self._ended,
                on_close_callback=self._ended,
            )
            self._connection.ioloop.start()
        except failures as exc:
            self.error = self.error or f"{type(exc).__name__}: {exc}"
        finally:
            if self._connection is not None:
                self._connection.ioloop.close()  # its wake-up socket pair
        return self.error

    def _opened(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._channel_opened)

    def _channel_opened(self, channel: Any) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._channel_closed)
        channel.confirm_delivery(
            ack_nack_callback=self._confirm,
            callback=lambda _: channel.exchange_declare(
                self.settings.exchange, exchange_type="topic", durable=True, callback=self._declared
            ),
        )

    def _declared(self, frame: Any) -> None:
        self.ready = True
        self.stats.state, self.stats.last_error = "connected", ""
        emit(
            logging.INFO,
            "amqp_events_connected",
            exchange=self.settings.exchange,
            url=redact_url(self.settings.url),
            waiting=len(self.outbox),
        )
        self._tick()

    def _tick(self) -> None:
        self.publisher.collect(self.outbox, 0)
        if self.publisher.stopping:
            now = time.monotonic()
            self._stopping_since = self._stopping_since or now
            if not self._inflight or now - self._stopping_since > STOP_GRACE:
                self._connection.close()
                return
        self._pump()
        self._connection.ioloop.call_later(TICK, self._tick)

    def _pump(self) -> None:
        room = WINDOW - len(self._inflight)
        if room <= 0 or not self._channel.is_open:
            return
        for seq, key, body in self.outbox.after(self._sent_through, room):
            self._channel.basic_publish(
                self.settings.exchange, key, body.encode(), amqp_link.persistent()
            )
            self._tag += 1
            self._inflight[self._tag] = self._sent_through = seq

    def _confirm(self, frame: Any) -> None:
        method = frame.method
        if method.NAME != "Basic.Ack":
            self.error = f"the broker refused event {self._inflight.get(method.delivery_tag)}"
            self._connection.close()
            return
        if method.multiple:
            self._confirmed.update(t for t in self._inflight if t <= method.delivery_tag)
        else:
            self._confirmed.add(method.delivery_tag)
        through = 0
        while self._inflight and next(iter(self._inflight)) in self._confirmed:
            tag = next(iter(self._inflight))
            self._confirmed.discard(tag)
            through = self._inflight.pop(tag)
            self.stats.published += 1
        if through:
            self.outbox.remove_through(through)
            self.stats.outbox = len(self.outbox)
        self._pump()

    def _channel_closed(self, channel: Any, reason: Exception) -> None:
        self.error = self.error or f"channel closed: {reason}"
        if self._connection.is_open:
            self._connection.close()

    def _ended(self, connection: Any, reason: Exception) -> None:
        if not self.publisher.stopping:
            self.error = self.error or f"{type(reason).__name__}: {reason}"
        connection.ioloop.stop()
