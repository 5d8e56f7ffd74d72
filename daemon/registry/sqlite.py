"""The embedded registry: Consul's catalogue (nodes and service instances) in one SQLite file.

It mirrors the Consul registry so the two can be swapped: capsync writes only to its own
node (whose meta names the owner and, per service, the writer), updates and deletes only
rows carrying its ``capsync-owner`` and its service (checked in the SQL statement itself,
so a row taken over between snapshot and apply is refused, not clobbered), and node,
service id and service name compare case-insensitively as Consul's indexes do. Each
batch of ops is one ``BEGIN IMMEDIATE`` transaction, like one /v1/txn.

Schema::

    nodes          name, address, meta (JSON)
    services       (node, id) -> service, tags (JSON list, order kept), meta (JSON),
                   address, port; owner and source derived from meta
    service_tags   (node, id, tag), indexed by tag, so queries narrow in SQL

Version 2 adds ``services.document``: the declaration's full form (the library's serde
JSON) when it has one, '' otherwise; a version 1 file is migrated in place, rows kept.
Version 3 adds ``services.health``: the worker's health (``discovery.health_text``), ''
for a row written before (its health is then written by the next cycle).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from config.errors import RegistryError
from config.settings import KindName, RegistrySettingsBase, in_state_directory
from daemon.plan import Changes
from daemon.query import Query
from daemon.registry.base import (
    ApplyResult,
    KeptRead,
    Listed,
    Operation,
    Refused,
    Snapshot,
    apply_in_batches,
)
from daemon.registry.ownership import Ownership
from daemon.registry.writer import claim
from discovery.codec import EXTERNAL_SOURCE, OWNER, Entry
from discovery.health import health_from_text, health_text
from discovery.kinds import BuildContext, Kind, field_arg

_SCHEMA_V1 = (
    """CREATE TABLE nodes (
        name    TEXT PRIMARY KEY COLLATE NOCASE,
        address TEXT NOT NULL,
        meta    TEXT NOT NULL
    )""",
    f"""CREATE TABLE services (
        node    TEXT NOT NULL COLLATE NOCASE
                REFERENCES nodes (name) ON DELETE CASCADE ON UPDATE CASCADE,
        id      TEXT NOT NULL COLLATE NOCASE,
        service TEXT NOT NULL COLLATE NOCASE,
        tags    TEXT NOT NULL,
        meta    TEXT NOT NULL,
        address TEXT NOT NULL,
        port    INTEGER NOT NULL,
        owner   TEXT GENERATED ALWAYS AS (json_extract(meta, '$."{OWNER}"')) VIRTUAL,
        source  TEXT GENERATED ALWAYS AS (json_extract(meta, '$."{EXTERNAL_SOURCE}"')) VIRTUAL,
        PRIMARY KEY (node, id)
    )""",
    "CREATE INDEX services_by_service ON services (service, source)",
    """CREATE TABLE service_tags (
        node TEXT NOT NULL COLLATE NOCASE,
        id   TEXT NOT NULL COLLATE NOCASE,
        tag  TEXT NOT NULL,
        PRIMARY KEY (node, id, tag),
        FOREIGN KEY (node, id) REFERENCES services (node, id)
            ON DELETE CASCADE ON UPDATE CASCADE
    )""",
    "CREATE INDEX service_tags_by_tag ON service_tags (tag)",
)


def _create_v1(db: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V1:
        db.execute(statement)


# Target version -> the step that brings a file from the version before it up to it.
def _add_document(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE services ADD COLUMN document TEXT NOT NULL DEFAULT ''")


def _add_health(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE services ADD COLUMN health TEXT NOT NULL DEFAULT ''")


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _create_v1,
    2: _add_document,
    3: _add_health,
}
SCHEMA_VERSION = max(MIGRATIONS)

_UPSERT = """
    INSERT INTO services (node, id, service, tags, meta, address, port, document, health)
    VALUES (:node, :id, :service, :tags, :meta, :address, :port, :document, :health)
    ON CONFLICT (node, id) DO UPDATE SET
        id = excluded.id, service = excluded.service, tags = excluded.tags,
        meta = excluded.meta, address = excluded.address, port = excluded.port,
        document = excluded.document, health = excluded.health
    WHERE services.owner = :owner AND services.service = :ours
"""
_SELECT = (
    "SELECT node, id, service, tags, meta, address, port, owner, document, health"
    " FROM services AS s"
)
_SET_HEALTH = """
    UPDATE services SET health = :health
    WHERE node = :node AND id = :id AND owner = :owner AND service = :ours
"""
_HAS_TAG = (
    " AND EXISTS (SELECT 1 FROM service_tags AS t"
    " WHERE t.node = s.node AND t.id = s.id AND t.tag IN ({}))"
)


def _version(db: sqlite3.Connection) -> tuple[int, int]:
    """Moves whenever anything is committed to the file: by another connection
    (data_version) or by this one (total_changes)."""
    return db.execute("PRAGMA data_version").fetchone()[0], db.total_changes


class SqliteRegistry:
    """One connection per instance, shared across threads behind a lock: the daemon
    may call from its scheduler thread while the HTTP side reads."""

    def __init__(
        self,
        path: Path,
        ownership: Ownership,
        *,
        node_address: str = "127.0.0.1",
        batch_size: int = 500,
    ) -> None:
        self._path = path
        self._ownership = ownership
        self._node_address = node_address
        self._batch_size = batch_size
        self._record: Mapping[str, str] = {}  # the apply's node meta to record (guard)
        self._lock = threading.Lock()
        # The last full read, at the file's version then.
        self._kept = KeptRead()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise RegistryError(f"sqlite registry {path}: open failed: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        try:
            with self._using("open"):
                self._open()
        except BaseException:
            self._db.close()
            raise

    def _open(self) -> None:
        # The busy timeout comes first: switching to WAL itself may wait for a lock.
        self._db.execute("PRAGMA busy_timeout = 5000")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA foreign_keys = ON")
        with self._transaction():
            version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RegistryError(
                    f"sqlite registry {self._path}: schema version {version} is newer than "
                    f"this capsync understands ({SCHEMA_VERSION}); upgrade capsync"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[target](self._db)
                self._db.execute(f"PRAGMA user_version = {target}")

    def snapshot(self) -> Snapshot:
        """The node's rows; the same Snapshot object as last time while no connection
        has committed to the file since that read (SQLite's data_version for others'
        commits, this connection's total_changes for its own), read in full at least
        every ``REREAD_SECONDS``."""
        with self._using("snapshot") as db:
            version = _version(db)
            if (kept := self._kept.get(version)) is not None:
                return kept
            started = self._kept.start()
            meta = self._meta()
            self._claim()
            rows = db.execute(f"{_SELECT} WHERE node = ?", (self._ownership.node,)).fetchall()
            settled = _version(db) == version  # nothing committed while it was read
        mine = [self._ownership.ours(row["owner"], row["service"]) for row in rows]
        owned = {row["id"]: _entry(row) for row, ours in zip(rows, mine, strict=True) if ours}
        foreign = frozenset(
            row["id"].casefold() for row, ours in zip(rows, mine, strict=True) if not ours
        )
        snapshot = Snapshot(owned=owned, foreign=foreign, meta=meta, health=True)
        self._kept.keep(version if settled else None, started, snapshot)
        return snapshot

    def apply(self, changes: Changes, stop: threading.Event | None = None) -> ApplyResult:
        self._record = changes.record
        if changes.writes:
            with self._using("apply"):
                self._claim()  # a node this capsync may not write fails the whole apply
        return apply_in_batches(
            changes, write=self._write, size=self._batch_size, stop=stop, batch=self._batch
        )

    @contextmanager
    def _batch(self) -> Iterator[None]:
        with self._using("apply"), self._transaction():
            self._ensure_node()
            yield

    def entries(self, query: Query | None = None) -> list[Listed]:
        sql = f"{_SELECT} WHERE s.service = ? AND s.source = 'capsync'"
        params = [self._ownership.service]
        if query is not None:
            for tag in query.has:
                sql += _HAS_TAG.format("?")
                params.append(tag)
            if query.tools:
                sql += _HAS_TAG.format(", ".join("?" * len(query.tools)))
                params.extend(query.tools)
        with self._using("entries") as db:
            rows = db.execute(sql + " ORDER BY s.node, s.id", params).fetchall()
        return [Listed(node=row["node"], entry=_entry(row)) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _using(self, operation: str) -> Iterator[sqlite3.Connection]:
        """Serialise access to the connection and name the file and operation on failure."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise RegistryError(
                    f"sqlite registry {self._path}: {operation} failed: {exc}"
                ) from exc

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front, so two writers queue on the busy
        # timeout instead of one failing when it upgrades a read lock.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.rollback()
            raise
        self._db.execute("COMMIT")

    def _meta(self) -> dict[str, str] | None:
        row = self._db.execute(
            "SELECT meta FROM nodes WHERE name = ?", (self._ownership.node,)
        ).fetchone()
        return None if row is None else dict(json.loads(row["meta"]))

    def _claim(self) -> tuple[bool, dict[str, str] | None]:
        """(node exists, meta to write or None); RegistryError when it may not write."""
        found = self._meta()
        meta = claim(
            found,
            self._ownership,
            where=f"sqlite registry {self._path}",
            record=self._record,
        )
        return found is not None, meta

    def _ensure_node(self) -> None:
        exists, meta = self._claim()
        if meta is not None and exists:
            self._db.execute(
                "UPDATE nodes SET meta = ? WHERE name = ?", (json.dumps(meta), self._ownership.node)
            )
        elif meta is not None:
            self._db.execute(
                "INSERT INTO nodes (name, address, meta) VALUES (?, ?, ?)",
                (self._ownership.node, self._node_address, json.dumps(meta)),
            )

    def _write(self, op: Operation) -> Refused | None:
        if op.action == "health":
            return self._set_health(op.entry)
        return self._delete(op.entry) if op.removes else self._upsert(op.entry)

    def _set_health(self, entry: Entry) -> Refused | None:
        """Only the health of one of our entries: its declaration is unchanged."""
        written = self._db.execute(
            _SET_HEALTH,
            {
                "node": self._ownership.node,
                "id": entry.id,
                "health": health_text(entry.health),
                "owner": self._ownership.owner,
                "ours": self._ownership.service,
            },
        ).rowcount
        return None if written else self._foreign_reason(entry.id)

    def _upsert(self, entry: Entry) -> Refused | None:
        """Create or replace one of our entries; the reason when it is refused."""
        if reason := self._ownership.foreign_owner(entry.owner):
            return Refused(entry.id, reason)
        written = self._db.execute(
            _UPSERT,
            {
                "node": self._ownership.node,
                "id": entry.id,
                "service": entry.service,
                "tags": json.dumps(entry.tags),
                "meta": json.dumps(dict(entry.meta)),
                "address": entry.address,
                "port": entry.port,
                "document": entry.document,
                "health": health_text(entry.health),
                "owner": self._ownership.owner,
                "ours": self._ownership.service,
            },
        ).rowcount
        if not written:
            return self._foreign_reason(entry.id)
        self._db.execute(
            "DELETE FROM service_tags WHERE node = ? AND id = ?", (self._ownership.node, entry.id)
        )
        self._db.executemany(
            "INSERT OR IGNORE INTO service_tags (node, id, tag) VALUES (?, ?, ?)",
            [(self._ownership.node, entry.id, tag) for tag in entry.tags],
        )
        return None

    def _delete(self, entry: Entry) -> Refused | None:
        """Remove one of our entries; an absent one is already done, as in Consul."""
        deleted = self._db.execute(
            "DELETE FROM services WHERE node = ? AND id = ? AND owner = ? AND service = ?",
            (self._ownership.node, entry.id, self._ownership.owner, self._ownership.service),
        ).rowcount
        return None if deleted else self._foreign_reason(entry.id)

    def _foreign_reason(self, worker_id: str) -> Refused | None:
        row = self._db.execute(
            "SELECT owner, service FROM services WHERE node = ? AND id = ?",
            (self._ownership.node, worker_id),
        ).fetchone()
        if row is None:
            return None
        return Refused(
            worker_id,
            f"{worker_id!r} on node {self._ownership.node!r} belongs to another writer "
            f"(capsync-owner {row['owner']!r}, service {row['service']!r}); left as it is",
            foreign=True,
        )


def _entry(row: sqlite3.Row) -> Entry:
    return Entry(
        id=row["id"],
        service=row["service"],
        tags=tuple(json.loads(row["tags"])),
        meta=json.loads(row["meta"]),
        address=row["address"],
        port=row["port"],
        document=row["document"],
        health=health_from_text(row["health"]),
    )


class SqliteRegistrySettings(RegistrySettingsBase):
    """One SQLite file: the embedded registry."""

    backend: Literal["sqlite"]
    name: KindName = "sqlite"
    path: Path = in_state_directory("registry.db")


def build(settings: SqliteRegistrySettings, ctx: BuildContext) -> SqliteRegistry:
    return SqliteRegistry(
        settings.path,
        Ownership.of(settings, takeover=ctx.takeover),
        node_address=settings.node_address,
    )


KIND = Kind("sqlite", SqliteRegistrySettings, "PATH", field_arg("path", required=True), build)
