"""Helpers of the kubernetes source's tests: a watch run in a thread, and waiting."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from config.errors import SourceError
from discovery.sources.kubernetes import KubernetesSource
from tests.conftest import SEED_LABEL
from tests.doubles.kubernetes import KubernetesDouble

ANNOTATION = "worker.capabilities"


@pytest.fixture
def double() -> Iterator[KubernetesDouble]:
    with KubernetesDouble() as running:
        yield running


@pytest.fixture
def make_source(double: KubernetesDouble, tmp_path: Path) -> Callable[..., KubernetesSource]:
    kubeconfig = double.write_kubeconfig(tmp_path / "kubeconfig")
    return lambda **kw: KubernetesSource(kubeconfig=str(kubeconfig), **kw)


def annotated(value: str = SEED_LABEL) -> dict[str, str]:
    return {ANNOTATION: value}


class Watching:
    """Runs source.watch() in a thread and records its notes; ``finish`` times the stop."""

    def __init__(self, source: KubernetesSource) -> None:
        self.seen: list[str] = []  # every note, in order
        self.unclaimed: list[str] = []  # notes no expect() has matched yet
        self.arrived = threading.Condition()
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=source.watch, args=(self.note, self.stop), daemon=True
        )  # a failed test must not hang the run
        self.thread.start()

    def note(self, reason: str) -> None:
        with self.arrived:
            self.seen.append(reason)
            self.unclaimed.append(reason)
            self.arrived.notify_all()

    def expect(self, text: str, timeout: float = 5.0) -> None:
        """Claim the first unclaimed note containing ``text`` (the kinds' threads race)."""
        with self.arrived:
            found = self.arrived.wait_for(
                lambda: any(text in n for n in self.unclaimed), timeout=timeout
            )
            assert found, f"no note with {text!r} within {timeout} s; got {self.seen}"
            self.unclaimed.remove(next(n for n in self.unclaimed if text in n))

    def finish(self) -> float:
        started = time.monotonic()
        self.stop.set()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive(), "watch() did not return after stop was set"
        return time.monotonic() - started


def out_of_sync(source: KubernetesSource) -> bool:
    try:
        source.list()
    except SourceError as exc:
        return "cache not in sync" in str(exc)
    return False


def watches(double: KubernetesDouble) -> int:
    return sum("watch=true" in path.lower() for _, path in list(double.requests))


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
