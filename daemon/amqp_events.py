"""The change-event publisher: every event of the bus (one per created, updated or deleted
entry, after each successful apply) to a durable RabbitMQ topic exchange,
``worker.capabilities.events`` by default.

Routing key ``<action>.<service>`` (``created.worker``, ``deleted.worker``); the body is
the watch stream's event message, with the same sequence numbers, plus the bus's
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
from config.settings import AmqpEventsSettings, redact_url
from daemon.events import ChangeEvent, EventBus, Start, Subscription
from discovery import amqp_link

BATCH = 500
WAIT = 0.5


def routing_key(event: ChangeEvent) -> str:
    return f"{event.action}.{event.entry.service}"


def message(stream: str, event: ChangeEvent) -> str:
    return json.dumps({"type": "event", "stream": stream, **event.as_json()},
                      separators=(",", ":"))


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
            self._db.execute("CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY "
                             "AUTOINCREMENT, key TEXT NOT NULL, body TEXT NOT NULL)")
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"amqp_events.outbox {path}: {exc}") from None

    def append(self, rows: list[tuple[str, str]]) -> int:
        """Add (routing key, body) rows; how many of the oldest were dropped to fit."""
        with self._db:
            self._db.executemany("INSERT INTO outbox (key, body) VALUES (?, ?)", rows)
            over = len(self) - self.limit
            if over > 0:
                self._db.execute("DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox "
                                 "ORDER BY seq LIMIT ?)", (over,))
        return max(over, 0)

    def oldest(self, count: int) -> list[tuple[int, str, str]]:
        return self._db.execute("SELECT seq, key, body FROM outbox ORDER BY seq LIMIT ?",
                                (count,)).fetchall()

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

    def __post_init__(self) -> None:
        self.stats = PublisherStats(self.settings.exchange)
        amqp_link.pika_module()  # a missing extra fails at start-up, naming the extra

    def start(self) -> EventPublisher:
        outbox = Outbox(self.settings.outbox, self.settings.outbox_max)
        self.stats.outbox = len(outbox)  # what the last run left
        self._thread = threading.Thread(target=self._run, args=(outbox,),
                                        name="amqp-events", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self, outbox: Outbox) -> None:
        _, subscription = self._subscribe()
        link = Link(self.settings, self.stats)
        try:
            while not self._stop.is_set():
                try:
                    self._take(outbox, subscription.wait(WAIT))
                    if subscription.dropped:
                        emit(logging.WARNING, "amqp_events_lost", reason=subscription.dropped)
                        subscription.close()
                        _, subscription = self._subscribe()
                    link.send(outbox)
                except sqlite3.Error as exc:  # the outbox's disk
                    self.stats.state, self.stats.last_error = "failing", f"outbox: {exc}"
                    emit(logging.ERROR, "amqp_outbox_failed", path=str(self.settings.outbox),
                         error=str(exc), action="the events of this turn are lost")
                    self._stop.wait(1.0)
            self._take(outbox, subscription.drain())
            link.send(outbox)
        finally:
            subscription.close()
            link.close()
            outbox.close()
            self.stats.state = "stopped"

    def _subscribe(self) -> tuple[Start, Subscription]:
        """Its queue is emptied into the outbox at every turn of the loop; the outbox is
        the bound (one cycle's events may be more than the bus's default queue)."""
        return self.bus.subscribe(wakeup=lambda: None, limit=sys.maxsize)

    def _take(self, outbox: Outbox, events: list[ChangeEvent]) -> None:
        if not events:
            return
        dropped = outbox.append([(routing_key(e), message(self.bus.stream, e))
                                 for e in events])
        if dropped:
            self.stats.dropped += dropped
            emit(logging.WARNING, "amqp_outbox_full", dropped=dropped,
                 limit=self.settings.outbox_max,
                 action="the oldest events were dropped; subscribers resynchronise from "
                        "the registry")
        self.stats.outbox = len(outbox)


class Link:
    """The publisher's connection: opened when there is something to send, reopened with
    backoff after a failure (the events wait in the outbox meanwhile)."""

    def __init__(self, settings: AmqpEventsSettings, stats: PublisherStats) -> None:
        self.settings, self.stats = settings, stats
        self.backoff = amqp_link.Backoff()
        self._retry_at = 0.0
        self._connection: Any = None
        self._channel: Any = None

    def send(self, outbox: Outbox) -> None:
        if not len(outbox) or time.monotonic() < self._retry_at:
            return
        failures: tuple[type[BaseException], ...] = (*amqp_link.failures(), ConfigError)
        try:
            channel = self._channel or self._open()
            while rows := outbox.oldest(BATCH):
                confirmed = 0
                try:
                    for seq, key, body in rows:
                        channel.basic_publish(self.settings.exchange, key, body.encode(),
                                              amqp_link.persistent())
                        confirmed = seq
                        self.stats.published += 1
                finally:
                    if confirmed:
                        outbox.remove_through(confirmed)
            self.stats.outbox = len(outbox)
        except failures as exc:
            self.close()
            wait = self.backoff.next()
            self._retry_at = time.monotonic() + wait
            self.stats.state, self.stats.last_error = "disconnected", f"{exc!r}"[:500]
            self.stats.outbox = len(outbox)
            emit(logging.WARNING, "amqp_events_down", url=redact_url(self.settings.url),
                 error=self.stats.last_error, waiting=len(outbox), retry=f"{wait:g}s")

    def _open(self) -> Any:
        self._connection = amqp_link.connect(self.settings, "capsync change events")
        channel = self._connection.channel()
        channel.confirm_delivery()
        channel.exchange_declare(self.settings.exchange, exchange_type="topic", durable=True)
        self._channel = channel
        self.backoff.reset()
        self.stats.state, self.stats.last_error = "connected", ""
        emit(logging.INFO, "amqp_events_connected", exchange=self.settings.exchange,
             url=redact_url(self.settings.url))
        return channel

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except amqp_link.failures():
                pass  # already broken
