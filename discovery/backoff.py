"""Reconnecting after a failure: one backoff value and one loop, for every watcher.

The Docker and Kubernetes watches, the Consul source's and liveness' blocking queries, the
leadership watch and the daemon's retry of a failed cycle all wait before trying again;
they differ only in the delays (a fixed pause is ``first == ceiling``), so they share this.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """``first`` seconds after the first failure, doubling after each further one up to
    ``ceiling``, each cut by up to ``jitter`` (a fraction, so many daemons' retries spread);
    ``reset`` after a success starts again from ``first``."""

    first: float
    ceiling: float
    jitter: float = 0.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0
    last: float = 0.0  # the delay ``next`` gave last, 0 after a reset

    def next(self) -> float:
        """Record a failure; return the delay before the next attempt."""
        self.failures += 1
        delay = min(self.first * 2.0 ** min(self.failures - 1, 62), self.ceiling)
        self.last = delay * (1 - self.jitter * self.rng.random())
        return self.last

    def reset(self) -> None:
        self.failures, self.last = 0, 0.0


def run_with_backoff(
    step: Callable[[], None],
    stop: threading.Event,
    backoff: Backoff,
    failed: Callable[[Exception, float], None],
    errors: tuple[type[Exception], ...] = (Exception,),
) -> None:
    """Call ``step`` until ``stop``. A step that returns is called again at once (it
    resets ``backoff`` when it made progress); one that raises one of ``errors`` is
    reported to ``failed`` with the delay, then retried after it. A failure seen after
    ``stop`` ends the loop unreported: it is the stop cutting the step short."""
    while not stop.is_set():
        try:
            step()
            continue
        except errors as exc:
            if stop.is_set():
                return
            delay = backoff.next()
            failed(exc, delay)
        stop.wait(delay)
