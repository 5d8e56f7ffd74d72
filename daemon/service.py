"""`capsync run`: the long-running service around the sync cycle.

One thread runs cycles (so they never overlap), woken by the Trigger: at start, on the
interval, on source events (debounced), after a reload, and after a failed cycle (retried
with backoff, so a registry or source that comes back is repaired within seconds). No
input, peer or reload ends this loop: only SIGTERM/SIGINT do. systemd hears READY=1 once it
runs, WATCHDOG=1 from this loop only (a stuck loop stops the pings), STATUS= after each
cycle, RELOADING=1/READY=1 around SIGHUP, STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from config.errors import CapsyncError, ConfigError
from config.events import emit
from config.settings import Settings
from daemon.amqp_events import EventPublisher
from daemon.amqp_events_settings import AmqpEventsSettings
from daemon.api_settings import ApiSettings
from daemon.cycle_report import CycleReport, unexpected
from daemon.events import EventBus, publish
from daemon.front_ends import FRONT_ENDS, FrontEnd, FrontEndContext, restart_needed
from daemon.front_rules import read_token
from daemon.metrics import Metrics
from daemon.registrar import Registrar, RegistrationContext, Renewer
from daemon.report import log_problems, summary
from daemon.retry import Backoff
from daemon.runtime import Runtime
from daemon.status import DaemonState
from daemon.systemd import Notifier, Supervision
from daemon.trigger import Trigger
from discovery.sources.inbox import InboxStats

TICK = 0.5


class Daemon:
    def __init__(
        self, load_settings: Callable[[], Settings], notifier: Notifier | None = None
    ) -> None:
        self.load_settings = load_settings
        self.settings = load_settings()
        self.notifier = notifier or Notifier(Supervision.given())
        self.state = DaemonState()
        self.metrics = Metrics()
        self.trigger = Trigger(self.settings.daemon.min_gap)
        self.backoff = Backoff(_retry_ceiling(self.settings))
        self.stopping = threading.Event()
        self._reload = threading.Event()
        self.front_ends: dict[str, FrontEnd] = {}
        self.runtime: Runtime | None = None
        self.events = EventBus(queue=ApiSettings.of(self.settings).watch_queue)
        publishing = AmqpEventsSettings.of(self.settings)
        self.publisher = EventPublisher(self.events, publishing) if publishing.enabled else None
        self.state.amqp = self._amqp_status
        self.state.front_ends = lambda: {n: f.status() for n, f in self.front_ends.items()}
        self.metrics.watch(amqp=self._amqp_status, inboxes=self._inboxes, bus=self.events)
        # When time alone next changes the registry (a tool's expiry passing), in Unix
        # seconds: the loop requests a cycle then, with no other event.
        self.change_at: float | None = None

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        self.registration = self._registration_context()
        registrar = Registrar(self.registration)
        ctx = FrontEndContext(self.settings, self.state, self.metrics, registrar)
        try:
            for kind in FRONT_ENDS.values():
                if kind.enabled(self.settings):
                    self.front_ends[kind.name] = kind.build(ctx).start()
            if self.publisher:
                self.publisher.start()
            self.runtime = Runtime(self.settings, self.trigger.request)
            self.runtime.observe(self.metrics.observe_registration)
        except BaseException:
            self._stop_front_ends()
            raise
        renewer = Renewer(registrar).start()
        self.runtime.start(self._on_leadership)
        self._publish_leadership()
        emit(
            logging.INFO,
            "started",
            **{
                kind.log_key: self.front_ends[name].address if name in self.front_ends else "off"
                for name, kind in FRONT_ENDS.items()
            },
            registries=",".join(r.name for r in self.settings.registries),
            owner=self.settings.registries[0].owner,
            sources=",".join(s.name for s in self.settings.sources),
            interval=f"{self.settings.daemon.interval:g}s",
        )
        self.notifier.ready("started")
        self.trigger.request("start")
        try:
            self._loop()
        finally:
            self.notifier.stopping()
            emit(logging.INFO, "stopping")
            self.runtime.close()
            self._stop_front_ends()
            renewer.stop()
        return 0

    def _stop_front_ends(self) -> None:
        """The front ends and the event publisher: what runs beside the runtime."""
        if self.publisher:
            self.publisher.stop()
        for front_end in self.front_ends.values():
            front_end.stop()

    def _loop(self) -> None:
        tick = min(TICK, self.notifier.watchdog_interval or TICK)
        while not self.stopping.is_set():
            reasons = self.trigger.wait(tick)
            self.notifier.watchdog()
            try:
                if self.change_at is not None and time.time() >= self.change_at:
                    self.change_at = None
                    self.trigger.request("expiry")
                if self._reload.is_set():
                    self._apply_reload()
                if reasons:
                    self._cycle(reasons)
            except Exception as exc:  # a bug here must not end the service
                emit(
                    logging.ERROR, "loop_error", error=unexpected(exc, "loop"), action="continuing"
                )

    def _cycle(self, reasons: list[str]) -> None:
        assert self.runtime is not None
        started = time.monotonic()
        try:
            report = self.runtime.syncer.run_once(
                dry_run=not self.runtime.is_leader, stop=self.stopping
            )
        finally:
            self.trigger.finished()
        publish(self.events, report)
        seconds = time.monotonic() - started
        if "retry" in reasons:
            self.metrics.retries.inc()
        self.change_at = report.next_change
        log_problems(report)
        text = summary(report)
        emit(
            logging.INFO if report.ok else logging.WARNING,
            "cycle",
            summary=text,
            ok=report.ok,
            seconds=f"{seconds:.3f}",
            reason=_reasons(reasons),
        )
        self._schedule_retry(report)
        self.state.record(report, time.time())
        self.metrics.observe(report, seconds, time.time())
        self.notifier.status(text)

    def _schedule_retry(self, report: CycleReport) -> None:
        """After a failure, ask for a cycle after the backoff delay; a success resets."""
        if report.ok:
            self.backoff.succeeded()
            self.trigger.retry_at(None)
            self.state.retrying(0, None)
            return
        delay = self.backoff.failed(self.trigger.clock(), report.retry_after)
        self.trigger.retry_at(self.backoff.due)
        self.state.retrying(self.backoff.failures, time.time() + delay)
        emit(
            logging.INFO,
            "retry_scheduled",
            failures=self.backoff.failures,
            retry_in=f"{delay:.1f}s",
        )

    def _apply_reload(self) -> None:
        self._reload.clear()
        self.notifier.reloading()
        assert self.runtime is not None
        try:
            settings = self.load_settings()
            runtime = Runtime(
                settings,
                self.trigger.request,
                self.runtime.syncer.handover,
            )
            runtime.observe(self.metrics.observe_registration)
        except Exception as exc:  # any failure keeps the running config
            error = str(exc) if isinstance(exc, CapsyncError) else unexpected(exc, "reload")
            emit(
                logging.ERROR,
                "reload_failed",
                error=" ".join(error.split()),
                action="keeping the running configuration",
            )
            self.notifier.ready("reload failed; running configuration kept")
            return
        for key in restart_needed(self.settings, settings, "amqp_events"):
            emit(
                logging.WARNING,
                "restart_needed",
                key=key,
                reason="the front ends and the event publisher start with the daemon",
            )
        # The new runtime takes the front ends' writes before the old one closes: a
        # registration during a reload is stored, never refused by a closed inbox.
        old, self.settings, self.runtime = self.runtime, settings, runtime
        old.close()
        self._rotate_token(settings)
        self.trigger.min_gap = settings.daemon.min_gap
        self.backoff.ceiling = _retry_ceiling(settings)
        runtime.start(self._on_leadership)
        self._publish_leadership()
        emit(
            logging.INFO,
            "reloaded",
            sources=",".join(s.name for s in settings.sources),
            registries=",".join(r.name for r in settings.registries),
        )
        self.notifier.ready("reloaded")
        self.trigger.request("reload")

    def _rotate_token(self, settings: Settings) -> None:
        """Apply the token file as it is now: a rotated token replaces the old one at once.
        A file emptied, deleted or unreadable is reported, and the running token kept
        (writes never fall open)."""
        try:
            token = read_token(ApiSettings.of(settings))
            if token is None and self.registration.token is not None:
                raise ConfigError("api.token_file: no token configured any more")
        except ConfigError as exc:
            emit(logging.ERROR, "token_not_rotated", error=str(exc), action="keeping the token")
            self.state.token_error = str(exc)
            return
        self.state.token_error = ""
        if token != self.registration.token:
            self.registration.token = token
            emit(logging.INFO, "token_rotated")

    def _registration_context(self) -> RegistrationContext:
        """What the push and watch API reach through a reload: the current runtime's inbox
        and first registry."""
        return RegistrationContext(
            inbox=lambda: self.runtime.inbox if self.runtime else None,
            registry=lambda: self.runtime.registries[0].registry if self.runtime else None,
            request=self.trigger.request,
            bus=self.events,
            settings=(api := ApiSettings.of(self.settings)),
            token=read_token(api),
            started=lambda: self.runtime is not None,
            observe=self.metrics.observe_registration,
        )

    def _amqp_status(self) -> dict[str, Any]:
        view: dict[str, Any] = {"consumers": self.runtime.consumers() if self.runtime else {}}
        if self.publisher is not None:
            view["publisher"] = self.publisher.stats.as_json()
        return view

    def _inboxes(self) -> dict[str, InboxStats]:
        return self.runtime.inboxes() if self.runtime else {}

    def _on_leadership(self, leader: bool) -> None:
        self._publish_leadership()
        if leader:
            self.trigger.request("became leader")

    def _publish_leadership(self) -> None:
        leader = self.runtime is not None and self.runtime.is_leader
        self.state.leader = leader
        self.metrics.leader.set(1 if leader else 0)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()
        self.trigger.wake()

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        self._reload.set()
        self.trigger.wake()


def _retry_ceiling(settings: Settings) -> float:
    return min(settings.daemon.interval, settings.daemon.retry_max)


def _reasons(reasons: list[str]) -> str:
    unique = list(dict.fromkeys(reasons))
    text = "; ".join(unique[:3])
    return text + (f" (+{len(unique) - 3} more)" if len(unique) > 3 else "")
