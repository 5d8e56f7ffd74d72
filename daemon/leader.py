"""Leader election: a Consul session and a KV lock; only the holder writes.

The session has no node checks (capsync's node is catalogue-only; see CONSUL-API.md), so
it lives exactly as long as it is renewed. Renewal runs in its own thread every TTL/3,
independent of the sync interval. A follower waits on the lock key with a blocking query,
so when the leader dies (its session expires, at most 2 x TTL after its last renewal, and
Consul releases the lock) it tries to acquire at once. ``on_change`` asks for a sync, so a
new leader writes without waiting for the next interval.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from urllib.parse import quote

from config.errors import CapsyncError
from config.events import emit
from discovery.backoff import Backoff, run_with_backoff
from discovery.consul.client import ConsulClient

# A follower's blocking query on the lock waits this long, so the watch thread sees
# ``stop`` within 2 s (a reload or an exit never leaves it behind).
WAIT_SECONDS = 1.5
PAUSE_SECONDS = 1.0  # between watch attempts while Consul does not answer


class Leadership:
    def __init__(self, client: ConsulClient, *, key: str, ttl: float, holder: str) -> None:
        self.client = client
        self.key = key
        self.ttl = ttl
        self.holder = holder
        self.on_change: Callable[[bool], None] = lambda leader: None
        self.is_leader = False
        self._session: str | None = None
        self._stop = threading.Event()
        # Held by every step and by stop: once stop has it, no thread creates a session
        # or takes the lock again.
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._renew_loop, name="leader-renew", daemon=True),
            threading.Thread(target=self._watch_loop, name="leader-watch", daemon=True),
        ]

    def start(self, on_change: Callable[[bool], None]) -> Leadership:
        self.on_change = on_change
        self._step()
        for thread in self._threads:
            thread.start()
        return self

    def close(self) -> None:
        """Stop, and give the lock up so a follower takes over at once."""
        self._stop.set()
        with self._lock:
            session, self._session = self._session, None
            if session:
                try:
                    self.client.put(
                        f"/v1/kv/{quote(self.key)}", self.holder, params={"release": session}
                    )
                    self.client.put(f"/v1/session/destroy/{session}")
                except CapsyncError as exc:
                    emit(logging.WARNING, "leader_release_failed", error=str(exc))
            self._set(False)
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=2 * WAIT_SECONDS)
        self.client.close()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            self._step()

    def _watch_loop(self) -> None:
        index = 0

        def watch() -> None:
            nonlocal index
            response = self.client.get(
                f"/v1/kv/{quote(self.key)}",
                params={"index": str(index), "wait": f"{WAIT_SECONDS * 1000:g}ms"},
                timeout=30,
            )
            index = response.index if response.index > index else 0
            held = response.status == 200 and any(
                item.get("Session") for item in response.body or ()
            )
            if not held and not self._stop.is_set():
                self._step()

        # Consul not answering is not news here: the renew loop reports it.
        run_with_backoff(
            watch,
            self._stop,
            Backoff(PAUSE_SECONDS, PAUSE_SECONDS),
            lambda exc, delay: None,
            errors=(CapsyncError,),
        )

    def _step(self) -> None:
        """Renew (or create) the session, then try to take or keep the lock."""
        with self._lock:
            self._step_locked()

    def _step_locked(self) -> None:
        if self._stop.is_set():
            return
        try:
            if (
                self._session
                and self.client.put(f"/v1/session/renew/{self._session}").status == 404
            ):
                self._session = None
            if self._session is None:
                self._session = self.client.put(
                    "/v1/session/create",
                    {
                        "Name": f"capsync leader {self.holder}",
                        "TTL": f"{int(self.ttl)}s",
                        "Behavior": "release",
                        "LockDelay": "0s",
                        "NodeChecks": [],
                    },
                ).body["ID"]
            acquired = self.client.put(
                f"/v1/kv/{quote(self.key)}", self.holder, params={"acquire": self._session}
            ).body
            self._set(acquired is True)
        except (CapsyncError, KeyError, TypeError) as exc:
            emit(logging.WARNING, "leader_check_failed", key=self.key, error=str(exc))
            self._set(False)

    def _set(self, leader: bool) -> None:
        if leader != self.is_leader:
            self.is_leader = leader
            emit(logging.INFO, "leadership", leader=leader, key=self.key, holder=self.holder)
            self.on_change(leader)
