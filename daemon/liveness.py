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
from discovery.consul import catalog_watch
from discovery.consul.client import ConsulClient

PAUSE_SECONDS = 1.0  # between attempts while Consul does not answer


class ConsulLiveness:
    """Follows the endpoint's shared catalogue query (discovery/consul/catalog_watch.py):
    with a consul source on the same endpoint, one blocking query serves both."""

    name = "registry"

    def __init__(self, client: ConsulClient) -> None:
        self.client = client

    def watch(self, notify: Callable[[str], None], stop: threading.Event) -> None:
        index, down = 0, False
        with catalog_watch.follow(self.client.endpoint, PAUSE_SECONDS) as answers:
            for answer in catalog_watch.answers_until(answers, stop):
                if isinstance(answer, Exception):
                    if not isinstance(answer, CapsyncError):
                        raise answer
                    if not down:
                        notify("registry unreachable")
                    down = True
                    continue
                if down:
                    notify("registry answers again")
                elif answer < index:
                    notify("registry index went back (Consul restarted)")
                down, index = False, answer

    def close(self) -> None:
        self.client.close()
