"""One source contract, every source kind, built through the kind table as the daemon
builds it: a working source lists what it sees; a broken one raises SourceError (never
another exception, never an empty listing); a closed one's watch ends promptly, and
closing twice is safe. A new kind joins by one entry in ``KINDS``.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from config import loading
from config.errors import SourceError
from daemon.runtime import WATCHER_JOIN_SECONDS
from daemon.settings_model import SETTINGS
from daemon.wiring import build_sources
from discovery.inbox import Registration, SqliteInbox
from discovery.normalise import Normaliser
from discovery.sources.base import Source, Watchable
from discovery.sources.table import SOURCE_KINDS
from discovery.validations import Validations
from tests.conftest import SEED_LABEL
from tests.docker_engine import IMAGE, DockerEngine
from tests.doubles.consul import ConsulDouble
from tests.doubles.kubernetes import KubernetesDouble

# A kind's scenario: given the test's request and directory, the [[sources]] table and
# environment of a source that sees the seed's "rust-worker", and of one that is broken.
Scenario = Callable[
    [pytest.FixtureRequest, Path, bool],
    AbstractContextManager[tuple[dict[str, Any], dict[str, str]]],
]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _file(request: pytest.FixtureRequest, tmp_path: Path, working: bool) -> Iterator[Any]:
    directory = tmp_path / "declarations"
    if working:
        directory.mkdir()
        (directory / "rust.json").write_text(SEED_LABEL)
    yield {"type": "file", "path": str(directory)}, {}


@contextmanager
def _docker(request: pytest.FixtureRequest, tmp_path: Path, working: bool) -> Iterator[Any]:
    if not working:
        yield {"type": "docker", "host": f"tcp://127.0.0.1:{_closed_port()}"}, {}
        return
    engine: DockerEngine = request.getfixturevalue("docker_engine")
    with engine.client() as client:
        container = client.containers.run(
            IMAGE, name="contract-rust", detach=True, labels={"worker.capabilities": SEED_LABEL}
        )
    try:
        yield {"type": "docker"}, {"DOCKER_HOST": engine.host}
    finally:
        container.remove(force=True)


@contextmanager
def _swarm(request: pytest.FixtureRequest, tmp_path: Path, working: bool) -> Iterator[Any]:
    if not working:
        yield {"type": "swarm", "host": f"tcp://127.0.0.1:{_closed_port()}"}, {}
        return
    engine: DockerEngine = request.getfixturevalue("swarm_engine")
    with engine.client() as client:
        service = client.services.create(
            IMAGE, name="rust-worker", labels={"worker.capabilities": SEED_LABEL}
        )
    try:
        yield {"type": "swarm"}, {"DOCKER_HOST": engine.host}
    finally:
        service.remove()


@contextmanager
def _kubernetes(request: pytest.FixtureRequest, tmp_path: Path, working: bool) -> Iterator[Any]:
    with KubernetesDouble() as double:
        double.put_pod("default", "rust", annotations={"worker.capabilities": SEED_LABEL})
        kubeconfig = double.write_kubeconfig(tmp_path / "kubeconfig")
        if not working:
            double.stop()
        yield {"type": "kubernetes", "kubeconfig": str(kubeconfig)}, {}


@contextmanager
def _consul(request: pytest.FixtureRequest, tmp_path: Path, working: bool) -> Iterator[Any]:
    with ConsulDouble() as double:
        import requests  # noqa: PLC0415

        requests.put(
            f"{double.url}/v1/catalog/register",
            timeout=10,
            json={
                "Node": "worker-host",
                "Address": "10.0.0.9",
                "Service": {
                    "ID": "rust-worker",
                    "Service": "rust",
                    "Meta": {"worker-capabilities": SEED_LABEL},
                },
            },
        ).raise_for_status()
        if not working:
            double.stop()
        yield {"type": "consul", "services": ["rust"]}, {"CONSUL_HTTP_ADDR": double.address}


def _inbox(kind: str, via: str, **table: Any) -> Scenario:
    """A source listing its inbox: what its front end stored (for amqp, what the consumer
    stored: it lists without the broker; tests/test_amqp.py consumes)."""

    @contextmanager
    def scenario(request: pytest.FixtureRequest, tmp_path: Path, working: bool) -> Iterator[Any]:
        if working:
            inbox = SqliteInbox(tmp_path / "inbox.db")
            inbox.put([Registration("rust-worker", json.loads(SEED_LABEL), via)])
            inbox.close()
            yield {"type": kind, "path": str(tmp_path / "inbox.db"), **table}, {}
            return
        with ConsulDouble() as double:
            double.stop()
            yield ({"type": kind, "store": "consul"}, {"CONSUL_HTTP_ADDR": double.address})

    return scenario


KINDS: dict[str, Scenario] = {
    "file": _file,
    "docker": _docker,
    "swarm": _swarm,
    "kubernetes": _kubernetes,
    "consul": _consul,
    "push": _inbox("push", "rest"),
    "amqp": _inbox("amqp", "amqp", url=f"amqp://guest:guest@127.0.0.1:{_closed_port()}/%2F"),
}


def test_every_kind_has_a_scenario() -> None:
    assert set(KINDS) == set(SOURCE_KINDS.kinds)


def built(table: dict[str, Any], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Source:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = loading.load(
        SETTINGS,
        environ={**os.environ, "CAPSYNC_CONFIG": os.devnull},
        overrides=loading.Overrides(sources=[table]),
    )
    [source] = build_sources(settings)
    return source


@pytest.mark.parametrize("kind", list(KINDS))
def test_lists_what_it_sees(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with KINDS[kind](request, tmp_path, True) as (table, env):
        source = built(table, env, monkeypatch)
        assert source.name == kind
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            listing = source.list()
    assert not listing.invalid
    assert [d.body() for d in listing.declarations] == [json.loads(SEED_LABEL)]


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_new_process_reuses_what_an_earlier_one_validated(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every kind fingerprints a declaration by its content, so what one process
    validated (kept in the state directory) is not validated again by the next, which
    gets the same worker."""
    cache = tmp_path / "validations.cache"
    runs = []
    with KINDS[kind](request, tmp_path, True) as (table, env):
        for _ in range(2):  # two processes: a new source and Normaliser, the same file
            source = built(table, env, monkeypatch)
            normaliser = Normaliser(Validations(cache))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                found, invalid = normaliser.normalise(source.list(), source.name)
            normaliser.save()
            source.close()
            runs.append(([item.caps for item in found], invalid, normaliser.reused))
    (first, invalid, reused_first), second = runs
    assert len(first) == 1 and not invalid and reused_first == 0
    assert second == (first, [], 1)


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_broken_source_raises_source_error(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with KINDS[kind](request, tmp_path, False) as (table, env):
        source = built(table, env, monkeypatch)
        with pytest.raises(SourceError) as caught:
            source.list()
    assert kind in str(caught.value).lower()  # says what could not be reached


@pytest.mark.parametrize("kind", list(KINDS))
def test_closing_ends_its_watch_and_twice_is_safe(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with KINDS[kind](request, tmp_path, True) as (table, env):
        source = built(table, env, monkeypatch)
        assert isinstance(source, Watchable)
        stop, before = threading.Event(), set(threading.enumerate())
        watch = threading.Thread(
            target=source.watch,
            args=(lambda reason: None, stop),
            daemon=True,
            name=f"contract-watch-{kind}",
        )
        watch.start()
        time.sleep(0.5)  # let the watch connect; the contract holds at any point
        stop.set()  # as the daemon closes: the stop event, then close()
        source.close()
        own = [
            t
            for t in threading.enumerate()  # the watch, and the threads it started
            if t is watch or (t not in before and t.name.startswith(f"{kind}-"))
        ]
        for thread in own:
            thread.join(WATCHER_JOIN_SECONDS)
        assert [t.name for t in own if t.is_alive()] == []
        source.close()
