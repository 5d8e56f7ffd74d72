"""One blocking query per Consul endpoint on the catalogue's service list.

The consul source (a change to list) and the Consul registry's liveness watch (Consul
gone, back, or restarted) both long-poll ``/v1/catalog/services``. When they talk to
the same endpoint they follow one shared query, as consul-template de-duplicates
identical watches: one request in flight, its answers (the ``X-Consul-Index``) and
failures handed to every follower. The query runs while someone follows it and ends
with the last follower.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from discovery.consul.client import ConsulClient, ConsulEndpoint

PATH = "/v1/catalog/services"
# Short enough that a watch notices its stop event within 2 s; the agent answers an
# unchanged index with an empty wait, so this costs one small request per wait.
WAIT = "1500ms"
TIMEOUT = 10.0  # seconds for one blocking query: its wait and a slow answer

Answer = int | Exception  # the index Consul answered with, or why it did not answer


class CatalogWatch:
    """The shared query of one endpoint; ``pause`` (seconds after a failure) is the
    shortest any follower asked for, so none hears of a recovery later than alone."""

    def __init__(self, endpoint: ConsulEndpoint) -> None:
        self.endpoint = endpoint
        self._client = ConsulClient(endpoint)
        self._lock = threading.Lock()
        self._followers: dict[int, tuple[queue.SimpleQueue[Answer], float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, answers: queue.SimpleQueue[Answer], pause: float) -> None:
        with self._lock:
            self._followers[id(answers)] = (answers, pause)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, daemon=True, name=f"consul-watch-{self._client.url}"
                )
                self._thread.start()

    def remove(self, answers: queue.SimpleQueue[Answer]) -> bool:
        """Stop following; True when nobody follows any more (the query ends)."""
        with self._lock:
            self._followers.pop(id(answers), None)
            if self._followers:
                return False
            self._stop.set()
        self._client.close()
        return True

    def _publish(self, answer: Answer) -> float:
        """Hand ``answer`` to every follower; the pause to keep after a failure."""
        with self._lock:
            followers = list(self._followers.values())
        for answers, _ in followers:
            answers.put(answer)
        return min((pause for _, pause in followers), default=0.0)

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set():
            try:
                _, answered = self._client.read(
                    PATH, dict, params={"index": str(index), "wait": WAIT}, timeout=TIMEOUT
                )
            except Exception as exc:  # each follower judges a failure: never end silently
                self._stop.wait(self._publish(exc))
                continue
            # An index that goes back (Consul restarted) starts the query afresh.
            index = answered if answered >= index else 0
            self._publish(answered)


_watches: dict[ConsulEndpoint, CatalogWatch] = {}
_watches_lock = threading.Lock()


@contextmanager
def follow(endpoint: ConsulEndpoint, pause: float) -> Iterator[queue.SimpleQueue[Answer]]:
    """Follow the endpoint's shared query (started for the first follower): its answers
    arrive on the queue yielded, until the block ends."""
    answers: queue.SimpleQueue[Answer] = queue.SimpleQueue()
    with _watches_lock:
        watch = _watches.get(endpoint)
        if watch is None:
            watch = _watches[endpoint] = CatalogWatch(endpoint)
        watch.add(answers, pause)
    try:
        yield answers
    finally:
        with _watches_lock:
            if watch.remove(answers) and _watches.get(endpoint) is watch:
                del _watches[endpoint]


def answers_until(answers: queue.SimpleQueue[Answer], stop: threading.Event) -> Iterator[Answer]:
    """The answers as they come, until ``stop`` is set (checked at least every 0.5 s)."""
    while not stop.is_set():
        try:
            yield answers.get(timeout=0.5)
        except queue.Empty:
            continue
