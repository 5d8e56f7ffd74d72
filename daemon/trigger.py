"""When to run the next cycle: debounced requests, never overlapping.

Sources' events and the interval both *request* a sync; the loop asks ``due(now)`` when
the next cycle may start. Requests during a cycle collapse into exactly one follow-up,
and no cycle starts sooner than ``min_gap`` after the previous one ended. A retry after a
failed cycle is a request that falls due at a given time (``retry_at``). Time is passed
in, so the rules are tested without sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Trigger:
    def __init__(self, min_gap: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.min_gap = min_gap
        self.clock = clock
        self._cond = threading.Condition()
        self._reasons: list[str] = []
        self._running = False
        self._last_end = float("-inf")
        self._retry: float | None = None

    def request(self, reason: str) -> None:
        with self._cond:
            self._reasons.append(reason)
            self._cond.notify_all()

    def retry_at(self, when: float | None) -> None:
        """Ask for a cycle at ``when`` (the clock's time); None cancels a pending retry."""
        with self._cond:
            self._retry = when
            self._cond.notify_all()

    def due(self, now: float) -> float | None:
        """Seconds until the next cycle may start (0: now), or None if none is wanted."""
        with self._cond:
            return self._delay(now)

    def wait(self, timeout: float) -> list[str]:
        """Block up to ``timeout`` for a due cycle; return its reasons and mark it running
        (empty list: nothing due yet)."""
        deadline = self.clock() + timeout
        with self._cond:
            while True:
                now = self.clock()
                delay = self._delay(now)
                if delay == 0.0:
                    reasons, self._reasons = self._reasons or ["retry"], []
                    self._retry = None
                    self._running = True
                    return reasons
                remaining = deadline - now
                if remaining <= 0:
                    return []
                self._cond.wait(remaining if delay is None else min(delay, remaining))

    def finished(self) -> None:
        with self._cond:
            self._running = False
            self._last_end = self.clock()
            self._cond.notify_all()

    def wake(self) -> None:
        """Let a waiting loop look at its flags (stop, reload) at once."""
        with self._cond:
            self._cond.notify_all()

    def _delay(self, now: float) -> float | None:
        if self._running or not (self._reasons or self._retry is not None):
            return None
        earliest = self._last_end + self.min_gap
        if not self._reasons and self._retry is not None:
            earliest = max(earliest, self._retry)
        return max(0.0, earliest - now)
