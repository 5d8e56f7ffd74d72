"""What the daemon knows about itself, shared between the sync loop and the HTTP server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from daemon.cycle_report import CycleReport, RegistryReport
from daemon.events import health_counts
from daemon.report import plan_json, summary


class DaemonState:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        self.leader = True
        self._report: CycleReport | None = None
        self._finished_at = 0.0
        self._last_success = 0.0
        self._sources: dict[str, dict[str, Any]] = {}
        # RabbitMQ consumers and the event publisher, read when asked (they count live).
        self.amqp: Callable[[], dict[str, Any]] = dict
        # Each front end (daemon/front_ends.py) by name: its own status.
        self.front_ends: Callable[[], dict[str, Any]] = dict
        # Why the last reload could not apply the API token file ("" when it did).
        self.token_error = ""
        self._failures = 0
        self._next_attempt: float | None = None

    def record(self, report: CycleReport, finished_at: float) -> None:
        with self._lock:
            self._report, self._finished_at = report, finished_at
            if report.ok:
                self._last_success = finished_at
            for source in report.sources:
                state = self._sources.setdefault(
                    source.name, {"last_error": "", "last_success": None}
                )
                state.update(ok=source.ok, found=source.found, invalid=source.invalid)
                if source.ok:
                    state["last_success"] = finished_at
                else:
                    state["last_error"] = source.error

    def retrying(self, failures: int, next_attempt: float | None) -> None:
        """Consecutive failed cycles, and when (Unix time) the retry is due."""
        with self._lock:
            self._failures, self._next_attempt = failures, next_attempt

    @property
    def ready(self) -> bool:
        """Ready: every registry answered and the last cycle succeeded in each (and every
        source listed)."""
        with self._lock:
            return self._report is not None and self._report.ok

    def summary(self) -> str:
        with self._lock:
            return summary(self._report) if self._report else "starting"

    def as_json(self) -> dict[str, Any]:
        with self._lock:
            report = self._report
            return {
                "ready": report is not None and report.ok,
                "leader": self.leader,
                "started": self.started,
                "last_cycle": None
                if report is None
                else {
                    "finished": self._finished_at,
                    "ok": report.ok,
                    "dry_run": report.dry_run,
                    "summary": summary(report),
                    # The first registry, as before there were several; each in "registries".
                    **_registry_json(report, report.registries[0]),
                    "registries": {
                        reg.name: {"ok": reg.ok, **_registry_json(report, reg)}
                        for reg in report.registries
                    },
                },
                "last_success": self._last_success or None,
                "consecutive_failures": self._failures,
                "next_attempt": self._next_attempt,
                "sources": {name: dict(state) for name, state in self._sources.items()},
                "amqp": self.amqp(),
                "front_ends": self.front_ends(),
                "token_error": self.token_error,
            }


def _registry_json(report: CycleReport, reg: RegistryReport) -> dict[str, Any]:
    return {
        "registry_error": reg.registry_error,
        "plan": plan_json(report, reg),
        # entries per health status (null: this registry keeps no health)
        "health": health_counts(reg),
        "refused": [vars(r) for r in (reg.applied.refused if reg.applied else ())],
        # What the registry confirmed, and the planned operations it did not write.
        "written": dict(reg.applied.written) if reg.applied else {},
        "unwritten": {
            "refused": len(reg.applied.refused) if reg.applied else 0,
            "unsent": reg.applied.unsent if reg.applied else 0,
            "interrupted": reg.applied.interrupted if reg.applied else 0,
        },
    }
