"""Noticing that the Consul registry went away or came back, without any source event.

With a long interval and quiet sources no cycle would run during an outage, and the
registry would be repaired only at the next resync. This watch asks for a sync when
Consul stops answering (the failed cycle starts the retry backoff and turns /readyz
red), when it answers again, and when its index goes back (it restarted, perhaps
without its data). Its blocking query is short, so a closed watch ends within 2 s.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from config.errors import CapsyncError
from discovery.backoff import Backoff, run_with_backoff
from discovery.consul.client import ConsulClient

WAIT = "1500ms"
PAUSE_SECONDS = 1.0  # between attempts while Consul does not answer


class ConsulLiveness:
    name = "registry"

    def __init__(self, client: ConsulClient) -> None:
        self.client = client

    def watch(self, notify: Callable[[str], None], stop: threading.Event) -> None:
        index, down = 0, False

        def poll() -> None:
            nonlocal index, down
            response = self.client.get(
                "/v1/catalog/services", params={"index": str(index), "wait": WAIT}, timeout=10
            )
            if down:
                notify("registry answers again")
            elif response.index < index:
                notify("registry index went back (Consul restarted)")
            down, index = False, response.index

        def failed(exc: Exception, delay: float) -> None:
            nonlocal down
            if not down:
                notify("registry unreachable")
            down = True

        run_with_backoff(
            poll, stop, Backoff(PAUSE_SECONDS, PAUSE_SECONDS), failed, errors=(CapsyncError,)
        )

    def close(self) -> None:
        self.client.close()
