"""When to try again after a failed cycle: exponential backoff with jitter.

About 1 s after the first failure, doubling after each further one up to a ceiling (the
resync interval, and at most ``daemon.retry_max`` so a repaired registry or source is
synced within seconds of its return), reset by a success. A peer's Retry-After (429) is
a floor. Time is passed in, so the rules are tested without sleeping.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

FIRST = 1.0
JITTER = 0.2  # each delay is cut by up to this fraction, so retries of many daemons spread


@dataclass
class Backoff:
    ceiling: float
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0
    due: float | None = None  # when the next retry is due (the caller's clock), if any

    def failed(self, now: float, retry_after: float | None = None) -> float:
        """Record a failed cycle; return the delay until the retry (also in ``due``)."""
        self.failures += 1
        delay = min(FIRST * 2.0 ** min(self.failures - 1, 62), self.ceiling)
        delay *= 1 - JITTER * self.rng.random()
        if retry_after is not None:
            delay = max(delay, retry_after)
        self.due = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures, self.due = 0, None
