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
from discovery.consul.client import ConsulClient

WAIT = "1500ms"
PAUSE_SECONDS = 1.0  # between attempts while Consul does not answer


class ConsulLiveness:
    name = "registry"

    def __init__(self, client: ConsulClient) -> None:
        self.client = client

    def watch(self, notify: Callable[[str], None], stop: threading.Event) -> None:
        index, down = 0, False
        while not stop.is_set():
            try:
                response = self.client.get("/v1/catalog/services",
                                           params={"index": str(index), "wait": WAIT},
                                           timeout=10)
            except CapsyncError:
                if not down and not stop.is_set():
                    notify("registry unreachable")
                down = True
                stop.wait(PAUSE_SECONDS)
                continue
            if down:
                notify("registry answers again")
            elif response.index < index:
                notify("registry index went back (Consul restarted)")
            down, index = False, response.index

    def close(self) -> None:
        self.client.close()
