"""The inbox source (kind ``push``): the live registrations in the inbox that workers
pushed over the daemon's front ends (REST, WebSocket, ...). Its place in the sources list
is its precedence, like any other source.

Each registration's health says how it lives: passing while its connection lives or its
lease has time left; warning once its connection ended (it leaves when its grace period
ends, unless the worker comes back) or when its lease runs out within
``LEASE_WARNING`` seconds without being renewed.

An expired lease is not listed, so its entry is deleted through the plan and the
deletion guard: a daemon that was down longer than the leases holds those deletions and
reports them instead of emptying the registry.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from config.errors import SourceError
from config.events import emit
from config.settings import SourceName, SourceSettingsBase, in_state_directory
from discovery.health import PASSING, Health
from discovery.inbox import (
    PURGE_AFTER,
    Inbox,
    InboxView,
    Observer,
    Registration,
    SqliteInbox,
    unobserved,
)
from discovery.inbox_consul import ConsulInbox
from discovery.kinds import BuildContext, Kind, field_arg
from discovery.sources.base import Declaration, Listing

POLL_SECONDS = 1.0
LEASE_WARNING = 10.0  # seconds before an unrenewed lease runs out: its health is warning


@dataclass
class InboxStats:
    """What the last listing found in the inbox, and the leases that ran out since the
    source started (the metrics read these; no store is read at scrape time)."""

    live: int = 0
    expired: int = 0
    lease_expiries: int = 0
    listed_at: float | None = None

    def listed(self, view: InboxView, now: float) -> None:
        self.live = len(view.live)
        self.expired = view.expired
        self.lease_expiries += len(view.expired_since)
        self.listed_at = now


@dataclass
class PushSource:
    inbox: Inbox
    name: str = "push"
    clock: Callable[[], float] = field(default=time.time, repr=False)
    inbox_stats: InboxStats = field(default_factory=InboxStats, repr=False)
    # A source that receives registrations itself (amqp) reports each call here, as the
    # daemon's front ends do (the metrics).
    observe: Observer = field(default=unobserved, repr=False)
    # What the last listing read: the watch asks for a cycle only when the inbox differs.
    _listed: set[tuple[str, str, bool]] | None = field(default=None, repr=False)

    def list(self) -> Listing:
        now = self.clock()
        try:
            view = self.inbox.view(now, self.inbox_stats.listed_at)
            if view.purgeable:
                self.inbox.purge(now - PURGE_AFTER)
        except SourceError as exc:
            raise SourceError(f"source {self.name}: {exc}") from exc
        self._listed = _seen(view.live)
        self.inbox_stats.listed(view, now)
        return Listing(
            [
                Declaration(
                    source=self.name,
                    ref=f"{r.via}/{r.id}",
                    data=r.body,
                    fingerprint=_fingerprint(r.body),
                    health=lease_health(r, now),
                )
                for r in view.live
            ]
        )

    def watch(self, notify: Callable[[str], None], stop: threading.Event) -> None:
        """Ask for a cycle when a lease runs out, or when the inbox holds what the last
        listing did not (another daemon's front end wrote to the Consul KV inbox): nothing
        else would until the interval. The inbox is looked at once a second, like the file
        source's poll; while its version is unchanged the rows of the last look are
        judged again (leases run out by the clock, not by a write), so a quiet inbox
        costs one small query a second, not a read of every row."""
        last, seen = self.clock(), Seen()
        while not stop.wait(POLL_SECONDS):
            now = self.clock()
            try:
                live, expired = seen.look(self.inbox, now, last)
            except SourceError as exc:
                emit(logging.DEBUG, "inbox_poll_failed", source=self.name, error=str(exc))
                continue  # the next listing reports it
            waning = [
                r.id
                for r in live
                if r.expires is not None
                and r.conn is None
                and last < r.expires - LEASE_WARNING <= now
            ]
            if expired:
                notify(
                    f"push: lease of {expired[0]} expired"
                    + (f" (+{len(expired) - 1} more)" if len(expired) > 1 else "")
                )
            elif waning:
                notify(f"push: lease of {waning[0]} runs out in {LEASE_WARNING:g}s")
            elif self._listed is not None and seen.differs(self._listed, now):
                notify("push: the inbox changed")
            last = now

    def close(self) -> None:
        self.inbox.close()


@dataclass
class Seen:
    """What the watch's last read of the inbox found: its version, and each live
    registration with what a listing compares of it (``_seen``'s tuple, computed once
    per read). With the version unchanged the rows are the same, so the next look
    judges them again at the new time instead of reading them."""

    version: Hashable | None = None
    rows: list[tuple[Registration, tuple[str, str, bool]]] = field(default_factory=list)

    def look(self, inbox: Inbox, now: float, since: float) -> tuple[list[Registration], list[str]]:
        """The live registrations at ``now`` and the ids whose lease ran out in
        (``since``, ``now``]."""
        version = inbox.version()
        if version is None or version != self.version:
            view = inbox.view(now, since)
            self.version = version
            self.rows = [(r, _seen_one(r)) for r in view.live]
            return view.live, [r.id for r in view.expired_since]
        expired = [r.id for r, _ in self.rows if r.expires is not None and since < r.expires <= now]
        return [r for r, _ in self.rows if r.live(now)], expired

    def differs(self, listed: set[tuple[str, str, bool]], now: float) -> bool:
        return {seen for r, seen in self.rows if r.live(now)} != listed


class InboxSettings(SourceSettingsBase):
    """Where a source's inbox lives. ``store``: ``sqlite`` (``path``, in the state
    directory), ``consul`` (Consul KV under ``kv_prefix``, so that every daemon accepts
    registrations and the leader syncs them), or ``auto``: Consul KV when leader election
    is on, else SQLite."""

    store: Literal["auto", "sqlite", "consul"] = "auto"
    path: Path = in_state_directory("inbox.db")
    kv_prefix: str = "capsync/inbox"


class PushSourceSettings(InboxSettings):
    """Registrations pushed to the daemon's front ends (REST, WebSocket)."""

    type: Literal["push"]
    name: SourceName = "push"


def open_inbox(settings: InboxSettings, ctx: BuildContext) -> Inbox:
    # ctx.takeover is on exactly when leader election is.
    consul = settings.store == "consul" or (settings.store == "auto" and ctx.takeover)
    return (
        ConsulInbox(ctx.consul_endpoint(), settings.kv_prefix)
        if consul
        else SqliteInbox(settings.path)
    )


def build(settings: PushSourceSettings, ctx: BuildContext) -> PushSource:
    return PushSource(open_inbox(settings, ctx), name=settings.name)


KIND = Kind("push", PushSourceSettings, "[PATH]", field_arg("path", required=False), build)


def _fingerprint(body: dict[str, object]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def _seen(registrations: list[Registration]) -> set[tuple[str, str, bool]]:
    return {_seen_one(r) for r in registrations}


def _seen_one(r: Registration) -> tuple[str, str, bool]:
    """What a listing and the watch compare of a registration: its key, its body and
    whether its connection still holds it (not its expiry: a renewal is no news)."""
    return (r.key, _fingerprint(r.body), r.released is None)


def lease_health(r: Registration, now: float) -> Health:
    """How a pushed worker lives: its connection, and the time its lease has left. The
    output names instants, not durations, so it does not change from cycle to cycle."""
    if r.released is not None and r.expires is not None:
        return Health(
            "warning",
            f"{r.via}: connection closed at {_instant(r.released)}; leaves at "
            f"{_instant(r.expires)} unless it registers again",
        )
    if r.expires is not None and r.conn is None and r.expires - now <= LEASE_WARNING:
        return Health("warning", f"{r.via}: lease runs out at {_instant(r.expires)}, not renewed")
    return PASSING


def _instant(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
