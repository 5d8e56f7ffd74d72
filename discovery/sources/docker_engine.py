"""The Docker engine connection shared by the docker and swarm sources.

Built lazily with ``docker.from_env()`` conventions (DOCKER_HOST, DOCKER_TLS_VERIFY,
DOCKER_CERT_PATH) or an explicit base URL, and dropped after a failure so the next
cycle reconnects to a restarted engine. docker's and requests' exceptions stop here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import docker
import docker.errors
import requests
from pydantic import Field

from config.errors import SourceError
from config.settings import DEFAULT_LABEL, SourceSettingsBase
from discovery.backoff import Backoff, run_with_backoff
from discovery.sources.base import watch_failed

BACKOFF_START = 1.0
BACKOFF_MAX = 30.0


class Engine:
    def __init__(
        self,
        source: str,
        base_url: str | None = None,
        timeout: float = 30.0,
        docker_host: str | None = None,
    ) -> None:
        self.source = source
        self.base_url = base_url
        # $DOCKER_HOST as the settings hand it: named in messages. Without ``base_url``
        # the docker library reads DOCKER_HOST, DOCKER_TLS_VERIFY... itself (from_env).
        self.docker_host = docker_host
        self.timeout = timeout
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()

    @contextmanager
    def api(self, what: str) -> Iterator[Any]:
        """The low-level API client; any failure becomes a SourceError naming ``what``."""
        try:
            yield self._connect().api
        except (docker.errors.DockerException, requests.RequestException) as exc:
            self.reset()
            raise SourceError(
                f"source {self.source}: {what} failed: {_reason(exc, self._where())}"
            ) from exc

    def watch(
        self,
        filters: dict[str, Any],
        on_event: Callable[[dict[str, Any]], None],
        on_resume: Callable[[], None],
        stop: threading.Event,
    ) -> None:
        """Follow the engine's event stream until ``stop``, reconnecting with backoff.

        A reconnection asks the engine to replay from the last event seen (``since``), and
        calls ``on_resume``: what happened while the engine was away (a restart empties
        its event buffer) is only found by listing again.
        """
        backoff = Backoff(BACKOFF_START, BACKOFF_MAX)
        since: int | None = None
        broken = False

        def follow() -> None:
            nonlocal since, broken
            done = threading.Event()
            try:
                with self.api("event stream") as api:
                    stream = api.events(decode=True, filters=filters, since=since)
                    threading.Thread(
                        target=_close_when, args=(stream, stop, done), daemon=True
                    ).start()
                    backoff.reset()
                    if broken:
                        broken = False
                        on_resume()
                    for event in stream:
                        since = event.get("time", since)
                        on_event(event)
            except SourceError:
                raise
            except Exception as exc:  # a torn stream (engine killed) must not end the watch
                self.reset()
                raise SourceError(f"event stream broke: {type(exc).__name__}") from exc
            finally:
                done.set()
            if not stop.is_set():
                raise SourceError("event stream ended")

        def failed(exc: Exception, delay: float) -> None:
            nonlocal broken
            broken = True
            watch_failed(self.source, str(exc), delay)

        run_with_backoff(follow, stop, backoff, failed)

    def reset(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _where(self) -> str:
        return self.base_url or self.docker_host or "unix:///var/run/docker.sock"

    def _connect(self) -> docker.DockerClient:
        with self._lock:
            if self._client is None:
                self._client = (
                    docker.DockerClient(base_url=self.base_url, timeout=self.timeout)
                    if self.base_url
                    else docker.from_env(timeout=self.timeout)
                )
            return self._client


def _close_when(stream: Any, stop: threading.Event, done: threading.Event) -> None:
    """Unblock the stream's read when the watch is asked to stop."""
    while not done.is_set():
        if stop.wait(0.2):
            stream.close()
            return


def _reason(exc: Exception, where: str) -> str:
    if isinstance(exc, docker.errors.APIError):
        return f"{exc.status_code} {exc.explanation or exc}"
    if isinstance(exc, requests.ConnectionError) or isinstance(
        exc.__cause__, requests.ConnectionError
    ):
        return f"cannot connect to the Docker engine at {where}"
    return str(exc) or type(exc).__name__


class EngineSourceSettings(SourceSettingsBase):
    """A Docker engine's objects; ``host`` defaults to DOCKER_HOST conventions."""

    environment: ClassVar[Mapping[str, str]] = {"docker_host": "DOCKER_HOST"}

    label: str = DEFAULT_LABEL
    host: str | None = None
    docker_host: str | None = Field(None, exclude=True)
