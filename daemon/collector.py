"""The cyclic garbage collector, paused while a cycle runs; what a cycle leaves is frozen.

A cycle's work is records without reference cycles (declarations, entries, snapshots),
which reference counting frees. A cold sync grows the heap by hundreds of thousands of
them, and the collector, set off by allocations, walks the growing heap again and again:
a fifth of a cold sync's CPU at 10,000 workers (measured with tests/bench). So it is
paused for the cycle.

Turned back on, it would walk what the cycle left, and every few cycles the whole heap
(a full collection: 0.4 s at 25,000 workers, most of a churn cycle's CPU, measured with
``gc.callbacks``). What is alive when a cycle ends is the daemon's long-lived state (the
kept snapshot, the listings, the validations), so it is frozen (``gc.freeze``): later
collections walk only what was made after it, and reference counting still frees it.
Cyclic garbage among the frozen objects is found by a full collection of everything
(thawed first) at most every ``FULL_SECONDS``: it waits that long, not longer.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

FULL_SECONDS = 300.0


class _Thawed:
    """When everything was last collected in full (None: not yet in this process)."""

    at: float | None = None


@contextmanager
def paused(clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """Automatic collection off for the block; back as it was after it, whatever
    happens (a collector someone else turned off stays off, and nothing is frozen)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            settle(clock())
            gc.enable()


def settle(now: float) -> None:
    """Freeze what is alive now; first, at most every ``FULL_SECONDS``, thaw and collect
    everything, so cyclic garbage among frozen objects is freed."""
    if _Thawed.at is None:
        _Thawed.at = now
    elif now - _Thawed.at >= FULL_SECONDS:
        gc.unfreeze()
        gc.collect()
        _Thawed.at = now
    gc.freeze()
