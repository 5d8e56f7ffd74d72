"""When to try again after a failed cycle: exponential backoff with jitter.

About 1 s after the first failure, doubling after each further one up to a ceiling (the
resync interval, and at most ``daemon.retry_max`` so a repaired registry or source is
synced within seconds of its return), reset by a success. A peer's Retry-After (429) is
a floor. Time is passed in, so the rules are tested without sleeping.
"""

from __future__ import annotations

import random

from discovery import backoff

FIRST = 1.0
JITTER = 0.2  # each delay is cut by up to this fraction, so retries of many daemons spread


class Backoff(backoff.Backoff):
    """The shared backoff, plus when the next retry is due on the caller's clock."""

    def __init__(self, ceiling: float, rng: random.Random | None = None) -> None:
        super().__init__(FIRST, ceiling, JITTER)
        if rng is not None:
            self.rng = rng
        self.due: float | None = None

    def failed(self, now: float, retry_after: float | None = None) -> float:
        """Record a failed cycle; return the delay until the retry (also in ``due``)."""
        delay = self.next()
        if retry_after is not None:
            delay = max(delay, retry_after)
        self.due = now + delay
        return delay

    def succeeded(self) -> None:
        self.reset()
        self.due = None
