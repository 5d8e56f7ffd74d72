"""Debouncing rules, with a fake clock: no sleeping."""

from __future__ import annotations

import pytest

from daemon.trigger import Trigger
from tests.fake_clock import Clock


def test_nothing_due_without_a_request() -> None:
    trigger = Trigger(1.0, Clock())
    assert trigger.due(100.0) is None
    assert trigger.wait(0) == []


def test_first_request_runs_at_once_then_min_gap_applies() -> None:
    clock = Clock()
    trigger = Trigger(1.0, clock)
    trigger.request("start")
    assert trigger.wait(0) == ["start"]
    trigger.finished()
    trigger.request("event a")
    assert trigger.due(clock.now) == 1.0
    clock.now += 0.4
    assert trigger.due(clock.now) == pytest.approx(0.6)
    clock.now += 0.6
    assert trigger.wait(0) == ["event a"]


def test_requests_during_a_cycle_make_exactly_one_follow_up() -> None:
    clock = Clock()
    trigger = Trigger(1.0, clock)
    trigger.request("start")
    assert trigger.wait(0) == ["start"]
    for i in range(5):
        trigger.request(f"event {i}")
        assert trigger.due(clock.now) is None  # never overlaps the running cycle
    trigger.finished()
    clock.now += 1.0
    assert trigger.wait(0) == [f"event {i}" for i in range(5)]
    trigger.finished()
    clock.now += 10
    assert trigger.wait(0) == []
