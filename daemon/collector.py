"""The cyclic garbage collector, paused while a cycle runs.

A cycle's work is records without reference cycles (declarations, entries, snapshots),
which reference counting frees. A cold sync grows the heap by hundreds of thousands of
them, and the collector, set off by allocations, walks the growing heap again and again:
a fifth of a cold sync's CPU at 10,000 workers (measured with tests/bench). Paused for the
cycle, it runs as usual after it: the first allocation after the cycle collects what the
cycle left in the youngest generation, so cyclic garbage (an exception's traceback, from
any thread) waits for the end of the cycle, not longer.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    """Automatic collection off for the block; back as it was after it, whatever
    happens (a collector someone else turned off stays off)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
