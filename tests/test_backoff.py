"""The one reconnect-with-backoff helper every watcher uses (discovery/backoff.py)."""

from __future__ import annotations

import random
import threading

import pytest

from discovery.backoff import Backoff, run_with_backoff


def test_delays_double_from_first_up_to_the_ceiling_and_a_reset_starts_again():
    backoff = Backoff(1.0, 30.0)
    assert [backoff.next() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.last == 30
    backoff.reset()
    assert (backoff.failures, backoff.last, backoff.next()) == (0, 0.0, 1.0)


def test_a_fixed_pause_is_first_equal_to_ceiling_and_jitter_only_shortens():
    assert {Backoff(5.0, 5.0).next() for _ in range(3)} == {5.0}
    jittered = Backoff(1.0, 8.0, jitter=0.2, rng=random.Random(3))
    delays = [jittered.next() for _ in range(5)]
    assert all(0.8 * d <= got <= d for got, d in zip(delays, [1, 2, 4, 8, 8], strict=True))


def test_the_loop_reports_each_failure_with_its_delay_and_stops_when_told():
    stop, calls, reported = threading.Event(), [], []

    def step() -> None:
        calls.append(len(calls))
        if len(calls) == 4:
            stop.set()
            raise OSError("cut short by the stop")  # not reported: the stop caused it
        if len(calls) % 2:
            raise OSError(f"attempt {len(calls)}")

    run_with_backoff(
        step, stop, Backoff(0.0, 0.0), lambda exc, delay: reported.append((str(exc), delay))
    )
    assert calls == [0, 1, 2, 3]
    assert reported == [("attempt 1", 0.0), ("attempt 3", 0.0)]


def test_an_error_outside_the_named_ones_is_not_swallowed():
    stop = threading.Event()

    def step() -> None:
        raise KeyError("a bug, not an outage")

    with pytest.raises(KeyError):
        run_with_backoff(step, stop, Backoff(0.0, 0.0), lambda exc, delay: None, errors=(OSError,))
