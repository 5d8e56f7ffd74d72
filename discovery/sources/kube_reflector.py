"""An informer-style cache of one Kubernetes collection: list once, then apply the watch's events.

Modelled on client-go's Reflector (tools/cache/reflector.go): a paged list fills the
cache and gives the resourceVersion to watch from; each event is applied to the cache;
only a 410 Gone or a failure makes it list again. A steady cycle then reads the cache and
costs the API server nothing. The cache holds ``View``s, the few fields of an object that
can change its declaration, so an event that changes nothing else (a pod's status, say)
is applied silently and wakes no cycle.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

from config.errors import SourceError
from discovery.backoff import Backoff, run_with_backoff
from discovery.health import PASSING, Health
from discovery.sources.base import watch_failed

BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
SHORT_WATCH = 1.0  # seconds: a watch that ends sooner with no event is a failure
STOP_POLL = 0.05  # how often a halt re-cuts a stream while the thread winds down
WATCH_TYPES = ("ADDED", "MODIFIED", "DELETED", "BOOKMARK")

Obj = dict[str, Any]  # an API object as JSON


@dataclass(frozen=True)
class View:
    """What of one object makes its declaration: equal views, the same declaration.

    ``text`` is the raw declaration (annotation text, or the spec as canonical JSON) and
    doubles as the declaration's fingerprint; ``parsed`` is its parse, done once per
    change, and plays no part in equality.
    """

    ref: str
    default_id: str | None
    text: str
    address: str = ""
    parsed: Any = field(default=None, compare=False)
    # A pod's readiness: part of equality, so a pod losing Ready triggers a sync.
    health: Health = PASSING


class Gone(Exception):
    """The watch's resourceVersion is older than the server's history (HTTP 410)."""


class VeryShortWatchError(Exception):
    """A watch ended within a second without any event, as client-go names it: a server
    or proxy that closes watches at once must not be polled in a tight loop."""


class CollectionClient(Protocol):
    """What a reflector needs from its source, for one collection."""

    name: str

    def session(self) -> AbstractContextManager[Any]: ...

    def fetch(self, api: Any, collection: str) -> tuple[list[Obj], str]: ...

    def open_watch(self, api: Any, collection: str, resource_version: str) -> Any: ...

    def view(self, collection: str, obj: Obj) -> View | None: ...

    def describe(self, collection: str, exc: BaseException) -> str: ...


class Reflector:
    """The cache of one collection and the thread that keeps it in step with the API server."""

    def __init__(
        self, client: CollectionClient, collection: str, notify: Callable[[str], None]
    ) -> None:
        self.client, self.collection, self.notify = client, collection, notify
        self.backoff = Backoff(BACKOFF_FIRST, BACKOFF_MAX)
        self._after = ""  # why the next list is a relist
        self.halted = threading.Event()
        self._lock = threading.Lock()
        self._views: dict[str, View] = {}
        # The sorted views last handed out, until the cache changes: the same list
        # object tells the source that nothing changed, so it hands back its listing.
        self._listed: list[View] | None = None
        self._synced = False
        self._problem = "its cache is not filled yet (the first list is running)"
        self._rv = ""
        self._settled = threading.Event()  # set once the first list has succeeded or failed
        self._response: Any = None  # the open watch response, so that halt() can cut it
        self._thread = threading.Thread(
            target=self.run, daemon=True, name=f"{client.name}-reflector-{collection}"
        )

    def start(self) -> Reflector:
        self._thread.start()
        return self

    def views(self, first_wait: float) -> list[View]:
        """The cached views, sorted; SourceError while the cache may be missing events.
        Waits up to ``first_wait`` seconds for the first list, so that a cycle at start-up
        is not reported failed while it runs. The same list object (never changed once
        handed out) while the cache is unchanged."""
        self._settled.wait(first_wait)
        with self._lock:
            if not self._synced:
                what = f"source {self.client.name}: {self.collection} cache"
                raise SourceError(f"{what} not in sync: {self._problem}")
            if self._listed is None:
                self._listed = [self._views[key] for key in sorted(self._views)]
            return self._listed

    def halt(self, deadline: float) -> None:
        """Stop the thread, cutting its watch stream; wait for it until ``deadline``
        (time.monotonic()), so that several reflectors halt within one bound."""
        self.halted.set()
        while self._thread.is_alive() and time.monotonic() < deadline:
            self._cut()  # repeated: a stream may have been opening while the last cut ran
            self._thread.join(STOP_POLL)

    def run(self) -> None:
        """Never raises: 410 relists at once, anything else relists after a backoff."""
        run_with_backoff(self._step, self.halted, self.backoff, self._failed)

    def _step(self) -> None:
        """One session: list if the cache is out of sync, then follow the watch. A 410
        relists at once (after the current delay, if errors came before it)."""
        try:
            with self.client.session() as api:
                if not self._in_sync():
                    self._relist(api)
                    self.notify(
                        f"kubernetes {self.collection} "
                        + (f"relisted after {self._after}" if self._after else "listed")
                    )
                    self._after = ""
                self._follow(api)
        except Gone as exc:
            if self.halted.is_set():
                return
            self._lost(exc)
            self._after, delay = "the watch expired (410 Gone)", self.backoff.last
            self.backoff.next()
            self.halted.wait(delay)

    def _failed(self, exc: Exception, delay: float) -> None:
        cause = self._lost(exc)
        self._after = f"an error ({cause})"
        watch_failed(self.client.name, cause, delay, kind=self.collection)
        logging.getLogger(__name__).debug("watch failure", exc_info=exc)

    def _lost(self, exc: Exception) -> str:
        """The cache may miss events from now on: say so to ``views``; the cause."""
        cause = self.client.describe(self.collection, exc)
        with self._lock:
            self._synced, self._problem = False, cause
        self._settled.set()
        return cause

    def _in_sync(self) -> bool:
        with self._lock:
            return self._synced

    def _relist(self, api: Any) -> None:
        items, rv = self.client.fetch(api, self.collection)
        views = {}
        for obj in items:
            if (view := self.client.view(self.collection, obj)) is not None:
                views[_key(obj)] = view
        with self._lock:
            self._views, self._rv, self._synced, self._problem = views, rv, True, ""
            self._listed = None
        self._settled.set()

    def _follow(self, api: Any) -> None:
        """One watch request from the cached resourceVersion, applied until it ends."""
        started, events = time.monotonic(), 0
        response = self.client.open_watch(api, self.collection, self._rv)
        self._response = response
        try:
            if self.halted.is_set():
                return
            for event in _events(response):
                events += 1
                self._apply(event)
                if self.halted.is_set():
                    return
        finally:
            self._response = None
            response.release_conn()
        if not events and time.monotonic() - started < SHORT_WATCH:
            raise VeryShortWatchError(
                "very short watch: the watch ended in under a second with no event"
            )
        self.backoff.reset()

    def _apply(self, event: Obj) -> None:
        type_, obj = event["type"], event["object"]
        if type_ == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise Gone(obj.get("message") or "410 Gone")
            raise SourceError(
                f"watch ERROR event: HTTP {code} {obj.get('reason')}: {obj.get('message')}"
            )
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if type_ == "BOOKMARK":
            self._rv = str(rv or self._rv)
            return
        key = _key(obj)
        new = None if type_ == "DELETED" else self.client.view(self.collection, obj)
        with self._lock:
            self._rv = str(rv or self._rv)
            old = self._views.get(key)
            if new == old:
                return
            if new is None:
                del self._views[key]
            else:
                self._views[key] = new
            self._listed = None
        self.notify(f"kubernetes {self.collection} {key} {type_}")

    def _cut(self) -> None:
        """Shut the watch's socket down: unlike closing it, that ends a blocked read."""
        response = self._response
        if response is not None:
            with suppress(OSError, AttributeError):
                response.shutdown()


def _events(response: Any) -> Iterator[Obj]:
    """The stream's events, each checked for the shape the API documents."""
    for line in response:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError as exc:
            raise SourceError(f"watch stream: not a JSON event: {exc}") from None
        if (
            not isinstance(event, dict)
            or not isinstance(event.get("object"), dict)
            or event.get("type") not in (*WATCH_TYPES, "ERROR")
        ):
            raise SourceError("watch stream: an event without the type and object fields")
        yield event


def _key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"
