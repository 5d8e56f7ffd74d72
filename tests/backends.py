"""One registry scenario, every registry: the fixture behind the contract tests.

``backend`` is SQLite on a temporary file, the Consul double, a real Consul agent when
one is available (see tests/consul_target.py), and real Redis and PostgreSQL servers
(tests/services.py: each test gets its own key prefix or schema), so the implementations
cannot drift apart.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from daemon.query import Query
from daemon.registry.sqlite import SqliteRegistry
from daemon.wiring import build_registry
from discovery.codec import Entry
from discovery.consul_fields import entry_from_service
from tests.consul_target import TARGETS, ConsulTarget, open_target
from tests.services import PostgresServer, RedisServer


@dataclass
class Backend:
    name: str
    consul: ConsulTarget | None = None
    db: Path | None = None
    owner: str = field(default_factory=lambda: f"t-{uuid.uuid4().hex[:8]}")
    service: str = "worker"
    store: dict[str, Any] | None = None  # [registry] keys of a Redis or PostgreSQL store
    config: Path | None = None

    @property
    def node(self) -> str:
        return f"capsync-{self.owner}"

    def args(self) -> list[str]:
        registry = ["--registry", f"sqlite:{self.db}"] if self.db else []
        return ["--owner", self.owner, "--service", self.service, *registry]

    def env(self) -> dict[str, str]:
        if self.config is not None:
            return {"CAPSYNC_CONFIG": str(self.config)}
        return self.consul.env() if self.consul else {}

    def with_service(self, service: str) -> Backend:
        return replace(self, service=service)

    def with_owner(self) -> Backend:
        """The same registry, another writer."""
        return replace(self, owner=f"t-{uuid.uuid4().hex[:8]}")

    def registry(self) -> Any:
        """The store's registry object, built as the daemon builds it."""
        assert self.store is not None
        return build_registry(Settings.model_validate(
            {"registry": {**self.store, "owner": self.owner, "service": self.service}}))

    def services(self) -> dict[str, Entry]:
        """Our node's instances of our service, as entries."""
        if self.store is not None:
            registry = self.registry()
            try:
                listed = registry.entries(Query())
            finally:
                registry.close()
            return {i.entry.id: i.entry for i in listed if i.entry.owner == self.owner}
        if self.consul is not None:
            items = self.consul.get(f"/v1/catalog/service/{self.service}")
            return {i["ServiceID"]: entry_from_service(i) for i in items if i["Node"] == self.node}
        assert self.db is not None
        registry = SqliteRegistry(self.db, service=self.service, owner=self.owner, node=self.node)
        try:
            listed = registry.entries(Query())
        finally:
            registry.close()
        return {item.entry.id: item.entry for item in listed if item.node == self.node}


def store_backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """A Redis or PostgreSQL store of its own for one test: a fresh prefix or schema."""
    name = f"t{uuid.uuid4().hex[:8]}"
    if kind == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        store = {"backend": "redis", "url": redis.url, "prefix": f"{name}:"}
    else:
        postgres: PostgresServer = request.getfixturevalue("postgres_server")
        store = {"backend": "postgres", "url": postgres.dsn, "schema_name": name}
    config = tmp_path / f"{kind}.toml"
    config.write_text("[registry]\n" + "".join(f'{k} = "{v}"\n' for k, v in store.items()))
    return Backend(kind, store=store, config=config)


@pytest.fixture(params=["sqlite", "redis", "postgres", *TARGETS])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", db=tmp_path / "registry.db")
    elif request.param in ("redis", "postgres"):
        yield store_backend(request.param, request, tmp_path)
    else:
        with open_target(request.param, request) as target:
            yield Backend(request.param, consul=target, owner=target.owner)
