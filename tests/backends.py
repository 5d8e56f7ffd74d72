"""One registry scenario, every registry: the fixture behind the contract tests.

``backend`` is SQLite on a temporary file, the Consul double, and a real Consul agent
when one is available (see tests/consul_target.py), so the two implementations cannot
drift apart.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from daemon.query import Query
from daemon.registry.sqlite import SqliteRegistry
from discovery.codec import Entry
from discovery.consul_fields import entry_from_service
from tests.consul_target import TARGETS, ConsulTarget, open_target


@dataclass
class Backend:
    name: str
    consul: ConsulTarget | None = None
    db: Path | None = None
    owner: str = field(default_factory=lambda: f"t-{uuid.uuid4().hex[:8]}")
    service: str = "worker"

    @property
    def node(self) -> str:
        return f"capsync-{self.owner}"

    def args(self) -> list[str]:
        registry = ["--registry", f"sqlite:{self.db}"] if self.db else []
        return ["--owner", self.owner, "--service", self.service, *registry]

    def env(self) -> dict[str, str]:
        return self.consul.env() if self.consul else {}

    def with_service(self, service: str) -> Backend:
        return Backend(self.name, self.consul, self.db, self.owner, service)

    def services(self) -> dict[str, Entry]:
        """Our node's instances of our service, as entries."""
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


@pytest.fixture(params=["sqlite", *TARGETS])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", db=tmp_path / "registry.db")
    else:
        with open_target(request.param, request) as target:
            yield Backend(request.param, consul=target, owner=target.owner)
