"""Everything one configuration brings to life: registries, sources and their watchers, the
interval job, leadership. A reload builds a new Runtime and closes the old one.

Everything that can fail (a client refusing its settings, a library missing) happens while
it is built, before anything starts: a reload that cannot build keeps the running one, and
what was built up to the failure is closed again, so nothing leaks.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from config.events import emit
from config.settings import Settings
from daemon.cycle import Deadlines, Handover, Syncer
from daemon.cycle_report import unexpected
from daemon.leader import Leadership
from daemon.liveness import ConsulLiveness
from daemon.registry_sync import RegistrySync
from daemon.wiring import (
    build_normaliser,
    build_registries,
    build_sources,
    close_all,
    consul_endpoint,
)
from discovery.consul.client import ConsulClient
from discovery.inbox import Inbox, Observer
from discovery.sources.amqp import AmqpSource
from discovery.sources.base import Source, Watchable
from discovery.sources.inbox import InboxStats, PushSource

WATCHER_JOIN_SECONDS = 2.0
WATCH_RESTART_SECONDS = 5.0
# With several registries, a cycle waits this long for each; a slower one goes on alone
# (reported "still applying") while the others' cycles carry on.
APPLY_DEADLINE_SECONDS = 30.0


class Runtime:
    def __init__(
        self,
        settings: Settings,
        request: Callable[[str], None],
        handover: Handover | None = None,
    ) -> None:
        self.settings = settings
        self.request = request
        self.registries: list[RegistrySync] = []
        self.sources: list[Source] = []
        self.leadership: Leadership | None = None
        self._liveness: ConsulLiveness | None = None
        self._stop = threading.Event()
        self._watchers: list[threading.Thread] = []
        self._scheduler = BackgroundScheduler(timezone="UTC")
        try:
            kept = handover or Handover()
            normaliser = kept.normaliser or build_normaliser(settings)
            self.registries = build_registries(settings)
            self.sources = build_sources(settings, normaliser.validations)
            names = {source.name for source in self.sources}
            self.syncer = Syncer(
                self.sources,
                self.registries,
                handover=replace(
                    kept,
                    listed_once=kept.listed_once & names,
                    normaliser=normaliser,
                ),
                deadlines=Deadlines(apply=APPLY_DEADLINE_SECONDS),
            )
            self.syncer.damper.min_seconds = settings.daemon.health_min_time
            self.leadership = self._leadership(settings)
            if any(reg.backend == "consul" for reg in settings.registries):
                self._liveness = ConsulLiveness(ConsulClient(consul_endpoint(settings.consul)))
            self._scheduler.add_job(
                request,
                "interval",
                args=["interval"],
                seconds=settings.daemon.interval,
                coalesce=True,
                max_instances=1,
                id="resync",
            )
        except BaseException:
            self.close()
            raise
        self._watchers = [
            threading.Thread(
                target=self._watch, args=(source,), name=f"watch-{source.name}", daemon=True
            )
            for source in [*self.sources, self._liveness]
            if isinstance(source, Watchable)
        ]

    @property
    def inbox(self) -> Inbox | None:
        """The push source's inbox, where the front ends write (None: no push source)."""
        return next(
            (
                s.inbox
                for s in self.syncer.sources
                if isinstance(s, PushSource) and not isinstance(s, AmqpSource)
            ),
            None,
        )

    def inboxes(self) -> dict[str, InboxStats]:
        """Each inbox-backed source's (push, amqp) last listing and lease expiries (metrics)."""
        return {s.name: s.inbox_stats for s in self.syncer.sources if isinstance(s, PushSource)}

    def observe(self, observer: Observer) -> None:
        """Report to ``observer`` the registrations the inbox sources receive themselves
        (amqp), as the daemon's front ends report theirs; before ``start``."""
        for source in self.syncer.sources:
            if isinstance(source, PushSource):
                source.observe = observer

    def consumers(self) -> dict[str, dict[str, Any]]:
        """Each amqp source's consumer: state and counters (/status, metrics)."""
        return {s.name: s.stats.as_json() for s in self.syncer.sources if isinstance(s, AmqpSource)}

    @property
    def is_leader(self) -> bool:
        return self.leadership is None or self.leadership.is_leader

    def start(self, on_leadership: Callable[[bool], None]) -> None:
        if self.leadership is not None:
            self.leadership.start(on_leadership)
        for watcher in self._watchers:
            watcher.start()
        self._scheduler.start()

    def close(self) -> None:
        """Stop and release everything; each part is closed even if another fails."""
        self._stop.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        close_all([self.leadership, self._liveness, *self.sources])
        for watcher in self._watchers:
            if watcher.is_alive():
                watcher.join(timeout=WATCHER_JOIN_SECONDS)
            if watcher.is_alive():
                emit(
                    logging.WARNING,
                    "watcher_still_running",
                    thread=watcher.name,
                    after=f"{WATCHER_JOIN_SECONDS:g}s",
                )
        close_all(target.registry for target in self.registries)
        if (syncer := getattr(self, "syncer", None)) is not None:
            syncer.close()  # None: this runtime failed to start

    def _leadership(self, settings: Settings) -> Leadership | None:
        daemon = settings.daemon
        if not daemon.leader_election:
            return None
        owner = settings.registries[0].owner
        return Leadership(
            ConsulClient(consul_endpoint(settings.consul)),
            key=daemon.leader_key or f"capsync/{owner}/leader",
            ttl=daemon.session_ttl,
            holder=_holder(owner),
        )

    def _watch(self, source: Watchable) -> None:
        """Run a source's watch until stop; one that raises (a bug, a library surprise)
        is logged on one line and started again after a pause, never left dead."""
        while not self._stop.is_set():
            try:
                source.watch(self._on_event, self._stop)
                return
            except Exception as exc:  # a watch must not die silently in its thread
                emit(
                    logging.ERROR,
                    "watch_failed",
                    source=getattr(source, "name", "?"),
                    error=unexpected(exc, "watch"),
                    retry_in=f"{WATCH_RESTART_SECONDS:g}s",
                )
                self._stop.wait(WATCH_RESTART_SECONDS)

    def _on_event(self, reason: str) -> None:
        emit(logging.DEBUG, "change_event", reason=reason)
        self.request(f"event: {reason}")


def _holder(owner: str) -> str:
    return f"{owner}@{socket.gethostname()}:{os.getpid()}"
