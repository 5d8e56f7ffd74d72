"""The in-memory registry: Consul's catalogue shape (nodes holding service instances) in a
dict, with the same contract as the others, for tests and dry runs without a server.

Several registries (owners) may share one ``MemoryCatalog`` to play writers side by side.
Ids compare case-insensitively, as in Consul; ownership is owner and service: updates and
deletes touch only this owner's entries of this service on its own node, so a row taken
over between snapshot and apply is refused. The node's meta records the writer of each
service (daemon/registry/writer.py), as the other registries do.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from config.errors import RegistryError
from config.settings import KindName, RegistrySettingsBase
from daemon.plan import Changes
from daemon.query import Query
from daemon.registry.base import (
    ApplyResult,
    Listed,
    Operation,
    Refused,
    Snapshot,
    apply_in_batches,
)
from daemon.registry.ownership import Ownership
from daemon.registry.writer import claim
from discovery.codec import EXTERNAL_SOURCE, Entry
from discovery.kinds import BuildContext, Kind, no_arg


@dataclass
class _Node:
    meta: dict[str, str]
    services: dict[str, Entry] = field(default_factory=dict)  # lower-cased id -> entry


@dataclass
class MemoryCatalog:
    """The shared state: node name (lower-cased) -> node."""

    nodes: dict[str, _Node] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class MemoryRegistry:
    def __init__(
        self,
        ownership: Ownership,
        catalog: MemoryCatalog | None = None,
        *,
        batch_size: int = 64,
    ) -> None:
        self.catalog = catalog or MemoryCatalog()
        self.ownership = ownership
        self.batch_size = batch_size
        self.closed = False
        self._node = _Node({})  # this owner's node, while a batch holds the catalog
        self._record: Mapping[str, str] = {}  # the apply's node meta to record (guard)

    def snapshot(self) -> Snapshot:
        with self._catalog():
            node = self.catalog.nodes.get(self.ownership.node.lower())
            self._claim(node)
            services = list(node.services.values()) if node else []
            meta = dict(node.meta) if node else None
        return Snapshot(
            owned={e.id: e for e in services if self._ours(e)},
            foreign=frozenset(e.id.casefold() for e in services if not self._ours(e)),
            meta=meta,
            health=True,
        )

    def apply(self, changes: Changes, stop: threading.Event | None = None) -> ApplyResult:
        self._record = changes.record
        if changes.writes:
            with self._catalog():  # a node this capsync may not write fails the whole apply
                self._claim(self.catalog.nodes.get(self.ownership.node.lower()))
        return apply_in_batches(
            changes, write=self._write, size=self.batch_size, stop=stop, batch=self._batch
        )

    def entries(self, query: Query | None = None) -> list[Listed]:
        query = query or Query()
        with self._catalog():
            listed = [
                Listed(node=name, entry=entry)
                for name, node in sorted(self.catalog.nodes.items())
                for _, entry in sorted(node.services.items())
                if entry.service.lower() == self.ownership.service.lower()
                and entry.meta.get(EXTERNAL_SOURCE) == "capsync"
            ]
        return [item for item in listed if _narrowed(query, set(item.entry.tags))]

    def close(self) -> None:
        """The catalog lives on with its holder; this registry answers no more."""
        self.closed = True

    @contextmanager
    def _catalog(self) -> Iterator[None]:
        if self.closed:
            raise RegistryError("memory registry: used after close")
        with self.catalog.lock:
            yield

    @contextmanager
    def _batch(self) -> Iterator[None]:
        with self._catalog():
            node = self.catalog.nodes.get(self.ownership.node.lower())
            meta = self._claim(node)
            if node is None:
                node = self.catalog.nodes[self.ownership.node.lower()] = _Node(meta or {})
            elif meta is not None:
                node.meta = meta
            self._node = node
            yield

    def _claim(self, node: _Node | None) -> dict[str, str] | None:
        return claim(
            None if node is None else node.meta,
            self.ownership,
            where="memory registry",
            record=self._record,
        )

    def _ours(self, entry: Entry) -> bool:
        return self.ownership.ours(entry.owner, entry.service)

    def _write(self, op: Operation) -> Refused | None:
        return self._delete(op.entry) if op.removes else self._upsert(op.entry)

    def _upsert(self, entry: Entry) -> Refused | None:
        if reason := self.ownership.foreign_owner(entry.owner):
            return Refused(entry.id, reason)
        if refused := self._foreign_reason(entry.id):
            return refused
        # Keyed by the lower-cased id: a case-only rename replaces the entry in place.
        self._node.services[entry.id.lower()] = entry
        return None

    def _delete(self, entry: Entry) -> Refused | None:
        if refused := self._foreign_reason(entry.id):
            return refused
        self._node.services.pop(entry.id.lower(), None)
        return None

    def _foreign_reason(self, worker_id: str) -> Refused | None:
        current = self._node.services.get(worker_id.lower())
        if current is None or self._ours(current):
            return None
        return Refused(
            worker_id,
            f"{worker_id!r} on node {self.ownership.node!r} belongs to another writer "
            f"(capsync-owner {current.owner!r}, service {current.service!r}); left as "
            "it is",
            foreign=True,
        )


def _narrowed(query: Query, tags: set[str]) -> bool:
    """What the tag index narrows to, as the SQLite registry's SQL does."""
    return all(tool in tags for tool in query.has) and (
        not query.tools or any(tool in tags for tool in query.tools)
    )


class MemoryRegistrySettings(RegistrySettingsBase):
    """Entries kept in this process only: for tests and trying a configuration out."""

    backend: Literal["memory"]
    name: KindName = "memory"


def build(settings: MemoryRegistrySettings, ctx: BuildContext) -> MemoryRegistry:
    return MemoryRegistry(Ownership.of(settings, takeover=ctx.takeover))


KIND = Kind("memory", MemoryRegistrySettings, "", no_arg, build)
