"""One registry scenario, every registry: the fixture behind the CLI contract tests, and
``REGISTRIES``, the one table of how the tests reach each registry kind.

``backend`` is each registry kind as the CLI reaches it: SQLite on a temporary file, the
Consul double, a real Consul agent when one is available (see tests/consul_target.py),
and real Redis and PostgreSQL servers (tests/services.py; each test gets an emptied Redis
database or a fresh PostgreSQL database), so the implementations cannot drift apart. A
kind is one entry in ``OPENERS``: the ``--registry`` argument and environment that select
it; the test reads the registry back through the same kind table the daemon builds it
from.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import psycopg
import pytest
import redis

from config import loading
from daemon.query import Query
from daemon.registry.base import Registry
from daemon.registry.table import REGISTRY_KINDS
from daemon.settings_model import SETTINGS
from daemon.wiring import build_registry
from discovery.codec import Entry
from tests.consul_target import TARGETS, ConsulTarget, open_target
from tests.services import PostgresServer, RedisServer


@dataclass(frozen=True)
class Backend:
    name: str
    registry: str  # the --registry argument
    environment: dict[str, str] = field(default_factory=dict)
    consul: ConsulTarget | None = None
    owner: str = field(default_factory=lambda: f"t-{uuid.uuid4().hex[:8]}")
    service: str = "worker"

    @property
    def node(self) -> str:
        return f"capsync-{self.owner}"

    def args(self) -> list[str]:
        return ["--owner", self.owner, "--service", self.service, "--registry", self.registry]

    def env(self) -> dict[str, str]:
        return dict(self.environment)

    def with_service(self, service: str) -> Backend:
        return replace(self, service=service)

    def another_owner(self) -> Backend:
        """The same registry, written by another capsync."""
        return replace(self, owner=f"t-{uuid.uuid4().hex[:8]}")

    @contextmanager
    def opened(self) -> Iterator[Registry]:
        """This registry as the daemon builds it from the same arguments."""
        settings = loading.load(
            SETTINGS,
            environ={**self.env(), "CAPSYNC_CONFIG": os.devnull},
            overrides=loading.Overrides(
                sections={"registry": {"owner": self.owner, "service": self.service}},
                registries=[REGISTRY_KINDS.parse_arg(self.registry)],
            ),
        )
        registry = build_registry(settings, settings.registries[0])
        try:
            yield registry
        finally:
            registry.close()

    def services(self) -> dict[str, Entry]:
        """Our node's instances of our service, as entries."""
        with self.opened() as registry:
            listed = registry.entries(Query())
        return {item.entry.id: item.entry for item in listed if item.node == self.node}


Opener = Callable[[pytest.FixtureRequest, Path], AbstractContextManager[Backend]]


@contextmanager
def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield Backend("sqlite", f"sqlite:{tmp_path / 'registry.db'}")


def _consul(target_kind: str) -> Opener:
    @contextmanager
    def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
        with open_target(target_kind, request) as target:
            yield Backend(target_kind, "consul", target.env(), target, owner=target.owner)

    return opener


@contextmanager
def _redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    server: RedisServer = request.getfixturevalue("redis_server")
    url = f"redis://127.0.0.1:{server.port}/2"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    yield Backend("redis", f"redis:{url}")


@contextmanager
def _postgres(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"t{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield Backend("postgres", f"postgres:{server.dsn.rsplit('/', 1)[0]}/{name}?sslmode=disable")


OPENERS: dict[str, Opener] = {
    "sqlite": _sqlite,
    "redis": _redis,
    "postgres": _postgres,
    **{t: _consul(t) for t in TARGETS},
}


@dataclass(frozen=True)
class RegistryTests:
    """Where a registry kind is tested: ``place``, the fixture of
    tests/test_registry_contract.py that opens it in this process; ``openers``, its
    entries in ``OPENERS`` (the CLI contract), none when a CLI run cannot reach it."""

    place: str
    openers: tuple[str, ...]


REGISTRIES: dict[str, RegistryTests] = {
    # The memory registry lives inside one process: a second capsync cannot open it.
    "memory": RegistryTests("memory_place", ()),
    "sqlite": RegistryTests("sqlite_place", ("sqlite",)),
    "redis": RegistryTests("redis_place", ("redis",)),
    "postgres": RegistryTests("postgres_place", ("postgres",)),
    "consul": RegistryTests("consul_place", tuple(TARGETS)),
}
PLACES = [tests.place for tests in REGISTRIES.values()]


@pytest.fixture(params=list(OPENERS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with OPENERS[request.param](request, tmp_path) as opened:
        yield opened
