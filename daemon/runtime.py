"""Everything one configuration brings to life: registries, sources and their watchers, the
interval job, leadership. A reload builds a new Runtime and closes the old one."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping

from apscheduler.schedulers.background import BackgroundScheduler

from config.events import emit
from config.settings import Settings
from daemon.cycle import GuardMemory, Syncer
from daemon.leader import Leadership
from daemon.wiring import build_registries, build_sources, consul_endpoint
from discovery.consul_client import ConsulClient
from discovery.inbox import Inbox
from discovery.sources.base import Closable, Watchable
from discovery.sources.push import PushSource


class Runtime:
    def __init__(self, settings: Settings, request: Callable[[str], None],
                 *, listed_once: set[str] | None = None,
                 guard_memory: Mapping[tuple[str, ...], GuardMemory] | None = None) -> None:
        self.settings = settings
        self.request = request
        self.registries = build_registries(settings)
        try:
            sources = build_sources(settings)
        except BaseException:
            self._close_registries()
            raise
        names = {source.name for source in sources}
        self.syncer = Syncer(sources, self.registries,
                             listed_once=(listed_once or set()) & names,
                             guard_memory=guard_memory)
        self.leadership: Leadership | None = None
        self._stop = threading.Event()
        self._watchers = [
            threading.Thread(target=source.watch, args=(self._on_event, self._stop),
                             name=f"watch-{source.name}", daemon=True)
            for source in sources
            if isinstance(source, Watchable)
        ]
        self._scheduler = BackgroundScheduler(timezone="UTC")
        self._scheduler.add_job(request, "interval", args=["interval"],
                                seconds=settings.daemon.interval, coalesce=True,
                                max_instances=1, id="resync")

    @property
    def inbox(self) -> Inbox | None:
        """The push source's inbox, where the front ends write (None: no push source)."""
        return next((s.inbox for s in self.syncer.sources if isinstance(s, PushSource)), None)

    @property
    def is_leader(self) -> bool:
        return self.leadership is None or self.leadership.is_leader

    def start(self, on_leadership: Callable[[bool], None]) -> None:
        daemon = self.settings.daemon
        if daemon.leader_election:
            owner = self.settings.registries[0].owner
            self.leadership = Leadership(
                ConsulClient(consul_endpoint(self.settings.consul)),
                key=daemon.leader_key or f"capsync/{owner}/leader", ttl=daemon.session_ttl,
                holder=_holder(owner), on_change=on_leadership,
            ).start()
        for watcher in self._watchers:
            watcher.start()
        self._scheduler.start()

    def close(self) -> None:
        self._stop.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        if self.leadership is not None:
            self.leadership.stop()
        for watcher in self._watchers:
            if watcher.is_alive():
                watcher.join(timeout=2)
        self._close_sources()
        self._close_registries()

    def _close_sources(self) -> None:
        for source in self.syncer.sources:
            if isinstance(source, Closable):
                source.close()

    def _close_registries(self) -> None:
        for target in self.registries:
            target.registry.close()

    def _on_event(self, reason: str) -> None:
        emit(logging.DEBUG, "change_event", reason=reason)
        self.request(f"event: {reason}")


def _holder(owner: str) -> str:
    return f"{owner}@{socket.gethostname()}:{os.getpid()}"
