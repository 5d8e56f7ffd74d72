"""The PostgreSQL registry, in the seed's table, so the seed's queries work unchanged.

Table ``worker_capabilities`` (in ``schema``, default public) has the seed's columns
(``id VARCHAR(255) PRIMARY KEY``, one JSONB list per category, ``flags``, ``metadata``,
``created_at``, ``updated_at``) and GIN index ``idx_tools``, plus capsync's own columns,
all named ``capsync_*``: owner, service, source, ref, digest, address, port, and tools
(``all_tools()`` as text[]). Rows whose ``capsync_owner`` is not this owner (the seed's
own rows have none) are never updated or deleted: the condition is in the statement
itself, so a row taken over between snapshot and apply is refused, not clobbered.

Every batch is one transaction sent in one round trip (pipeline mode): one multi-row
upsert and one multi-row delete. ``created_at`` is set by the insert only; ``updated_at``
moves only when the declaration columns change. The schema and its migrations are in
``postgres_schema``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Field

from config.errors import ConfigError, RegistryError
from config.secrets import read_secret
from config.settings import KindName
from daemon.plan import Changes
from daemon.query import Query
from daemon.registry import postgres_schema, store
from daemon.registry.base import (
    ApplyResult,
    KeptRead,
    Listed,
    Operation,
    Refused,
    Snapshot,
)
from daemon.registry.ownership import Ownership
from daemon.registry.postgres_schema import SEED as _SEED
from daemon.registry.store import Claim, StoreConnection, StoreSettings
from discovery import seed_store
from discovery.codec import Entry
from discovery.health import health_text
from discovery.kinds import BuildContext, Kind, field_arg
from discovery.model import CATEGORIES

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

EXTRA_HINT = "the postgres registry needs the 'postgres' extra: pip install 'capsync[postgres]'"
# SQLSTATE classes of an error about a value, not the server: 22 data exception (U+0000
# in JSONB or text, a string over its column's length), 54 program limit exceeded (a
# row over an index's size limit).
_BY_ENTRY = ("22", "54")
_OWN = ("owner", "service", "source", "ref", "digest", "address", "meta", "port", "tools")


# Statements are assembled from the constant column names above; values always travel as
# parameters and the schema as a quoted identifier ({s}).
_COLUMNS = ", ".join((*_SEED, *(f"capsync_{name}" for name in _OWN)))
# The JSONB columns are read as text: an unchanged row is recognised by its text and not
# parsed again (seed_store.Decoder).
_READ = ", ".join((*(f"{c}::text" for c in _SEED), *(f"capsync_{name}" for name in _OWN)))
# capsync_health last: the worker's health (discovery.health.health_text), beside the rest.
_SELECT = f"SELECT id, {_READ}, capsync_health FROM {{s}}.worker_capabilities"  # noqa: S608
_OWNER_AT = 1 + len(_SEED)  # capsync_owner's place in a _SELECT row
_RECORD = ", ".join(
    (
        "id text",
        *(f"{column} jsonb" for column in _SEED),
        *(f"{name} text" for name in _OWN[:-2]),
        "port integer",
        "tools text[]",
        "health text",
    )
)
_UPSERT = (
    f"INSERT INTO {{s}}.worker_capabilities AS w (id, {_COLUMNS}, capsync_health) "  # noqa: S608
    f"SELECT id, {', '.join((*_SEED, *_OWN))}, health "
    f"FROM jsonb_to_recordset(%(rows)s::jsonb) AS r({_RECORD}) "
    "WHERE {held} AND NOT EXISTS (SELECT 1 FROM {s}.worker_capabilities AS x "
    "WHERE lower(x.id) = lower(r.id) AND x.id <> r.id) "
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in (*_COLUMNS.split(", "), "capsync_health"))
    + f", updated_at = CASE WHEN ({', '.join(f'w.{c}' for c in _SEED)}) IS DISTINCT FROM "
    f"({', '.join(f'EXCLUDED.{c}' for c in _SEED)}) THEN NOW() ELSE w.updated_at END "
    "WHERE w.capsync_owner = EXCLUDED.capsync_owner "
    "AND lower(w.capsync_service) = lower(EXCLUDED.capsync_service) "
    f"RETURNING w.id, {', '.join(f'w.{c}::text' for c in _SEED)}"
)
# Rows of this owner and service are ours; and only while this capsync holds the claim.
_OURS = "capsync_owner = %(owner)s AND lower(capsync_service) = %(service)s"
_HELD = (
    "EXISTS (SELECT 1 FROM {s}.capsync_nodes WHERE owner = %(owner)s "
    "AND meta ->> %(field)s::text = %(writer)s::text)"
)
# A case-only rename moves our row to the new id before the upsert: one update, in the
# batch's transaction, created_at kept.
_RENAME = (
    "UPDATE {s}.worker_capabilities AS w SET id = r.id "  # noqa: S608
    "FROM unnest(%(ids)s::text[]) AS r(id) "
    f"WHERE lower(w.id) = lower(r.id) AND w.id <> r.id AND {_OURS} AND {{held}}"
)
# A health update writes capsync_health alone: the seed's columns are unchanged.
_SET_HEALTH = (
    "UPDATE {s}.worker_capabilities AS w SET capsync_health = r.health "  # noqa: S608
    "FROM jsonb_to_recordset(%(healths)s::jsonb) AS r(id text, health text) "
    f"WHERE w.id = r.id AND {_OURS} AND {{held}} RETURNING w.id"
)
_DELETE = (
    "DELETE FROM {s}.worker_capabilities WHERE lower(id) = ANY(%(gone)s) "  # noqa: S608
    f"AND {_OURS} AND {{held}} RETURNING id"
)
# The claim: this writer's name under capsync-writer-<service>, unless the meta changed
# since it was read (another writer got there first).
_CLAIM = (
    "INSERT INTO {s}.capsync_nodes AS n (owner, meta) VALUES (%(owner)s, %(meta)s) "
    "ON CONFLICT (owner) DO UPDATE SET meta = n.meta || EXCLUDED.meta "
    "WHERE COALESCE(n.meta ->> %(field)s::text, '') = %(seen)s::text"
)
_NODE = "SELECT meta FROM {s}.capsync_nodes WHERE owner = %s"
# The table's version: its rows and a 64-bit hash of each row's every column, summed
# (computed by the server: a steady cycle receives two numbers, not every row).
_VERSION = "SELECT count(*), sum(hashtextextended(w::text, 0)) FROM {s}.worker_capabilities AS w"


@dataclass(frozen=True)
class PostgresEndpoint:
    """A postgresql:// DSN or key=value string; libpq fills in the rest from PGHOST,
    PGPORT, PGUSER, PGDATABASE, PGPASSWORD, PGPASSFILE, PGSSLMODE..."""

    dsn: str = ""
    connection: StoreConnection = field(default_factory=StoreConnection)
    sslmode: str | None = None
    pgoptions: str = ""  # PGOPTIONS, handed over by the configuration loading

    def options(self, conninfo_to_dict: Any) -> dict[str, Any]:
        # The statement time-out goes first so that the DSN's (or PGOPTIONS') own server
        # options, kept after it, win: default_transaction_read_only and the like.
        given = conninfo_to_dict(self.dsn).get("options") or self.pgoptions
        conn = self.connection
        options: dict[str, Any] = {
            "connect_timeout": max(2, round(conn.timeout)),
            "options": f"-c statement_timeout={round(conn.timeout * 1000)} {given}".strip(),
            "application_name": "capsync",
        }
        if conn.password_file is not None:
            options["password"] = read_secret(conn.password_file, "registry.password_file")
        tls = {
            "sslmode": self.sslmode,
            "sslrootcert": conn.ca_file,
            "sslcert": conn.cert_file,
            "sslkey": conn.key_file,
        }
        options.update({key: str(value) for key, value in tls.items() if value is not None})
        return options


def _psycopg() -> Any:
    try:
        import psycopg  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(EXTRA_HINT) from exc
    return psycopg


class PostgresRegistry:
    """One connection, opened (and the schema migrated) on first use and again after it
    breaks, so a server that is down fails a cycle, never the daemon's start."""

    def __init__(
        self,
        endpoint: PostgresEndpoint,
        ownership: Ownership,
        *,
        schema: str = "public",
        batch_size: int = 500,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._psycopg = _psycopg()
        self._dsn = endpoint.dsn
        try:
            self._options = endpoint.options(self._psycopg.conninfo.conninfo_to_dict)
        except self._psycopg.Error as exc:
            raise ConfigError(f"registry.url: not a libpq connection string: {exc}") from None
        self._ownership = ownership
        self._schema = schema
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._decoder = seed_store.Decoder()
        self._clock = clock
        self.claim = Claim("postgres", ownership)
        # The last full read, at the table's version and the node's meta then.
        self._kept = KeptRead()

    def snapshot(self) -> Snapshot:
        try:
            return self._snapshot()
        except RegistryError as exc:
            if not isinstance(exc.__cause__, self._psycopg.errors.UndefinedTable):
                raise
            return self._snapshot()  # reconnected: the missing table is recreated

    def _snapshot(self) -> Snapshot:
        # While the table's version and the node's meta are what they were at the last
        # full read (asked in one round trip), that read's Snapshot is handed back. A
        # full read is one round trip too: every row (though only ours are decoded: the
        # others, another writer's or the seed's own, hold ids that are never ours to
        # write), the owner's node meta (the writer claim) and the version just before
        # and after the rows; it is kept only when the two agree (nothing committed).
        with self._using("snapshot") as conn:
            if self._kept.fresh():
                with conn.pipeline():
                    version = conn.execute(self._sql(_VERSION))
                    node = conn.execute(self._sql(_NODE), (self._ownership.owner,))
                meta = _meta(node.fetchone())
                self.claim.update(meta)
                now = (version.fetchone(), json.dumps(meta, sort_keys=True))
                if (kept := self._kept.get(now)) is not None:
                    self.claim.wanted()  # as a full read checks it
                    return kept
            started = self._kept.start()
            with conn.pipeline():
                before = conn.execute(self._sql(_VERSION))
                selected = conn.execute(self._sql(_SELECT))
                node = conn.execute(self._sql(_NODE), (self._ownership.owner,))
                after = conn.execute(self._sql(_VERSION))
            rows = selected.fetchall()
            meta = _meta(node.fetchone())
            self.claim.update(meta)
            counted = before.fetchone()
            settled = counted == after.fetchone()
            seen = (counted, json.dumps(meta, sort_keys=True))
        snapshot = store.snapshot(
            ((row[0], self._decode(row) if self._ours(row) else None) for row in rows),
            self.claim,
            self._decoder,
        )
        self._kept.keep(seen if settled else None, started, snapshot)
        return snapshot

    def apply(self, changes: Changes, stop: threading.Event | None = None) -> ApplyResult:
        return store.apply_batches(self, changes, stop)

    def _ours(self, row: tuple[Any, ...]) -> bool:
        """This owner's row of this service, by its columns (before decoding it)."""
        owner, service = row[_OWNER_AT], row[_OWNER_AT + 1] or ""
        return self._ownership.ours(owner, service)

    def send(self, batch: list[Operation]) -> list[Refused]:
        try:
            with self._using("apply") as conn:
                return self._batch(conn, batch)
        except RegistryError as exc:
            cause = exc.__cause__
            if not isinstance(cause, self._psycopg.Error):
                raise  # the writer claim
            # The server's error answer (it has an SQLSTATE: read-only, time-out, a failed
            # statement) rolled the transaction back; a lost connection has no verdict.
            if not cause.sqlstate:
                raise store.Interrupted(str(exc)) from exc
            raise store.Rejected(str(exc), by_entry=cause.sqlstate[:2] in _BY_ENTRY) from exc

    def entries(self, query: Query | None = None) -> list[Listed]:
        query = query or Query()
        where = ["lower(capsync_service) = lower(%s)", "capsync_owner IS NOT NULL"]
        params: list[Any] = [self._ownership.service]
        if query.has:
            where.append("capsync_tools @> %s::text[]")
            params.append(list(query.has))
        column = CATEGORIES.get(query.category or "")
        if query.tools and column:
            # Containment on the category's GIN index, by name or by alternative.
            where.append(f"({column} @> ANY(%s::jsonb[]))")
            params.append(
                [
                    self._json(pattern)
                    for tool in query.tools
                    for pattern in ([{"tool_name": tool}], [{"alternatives": [tool]}])
                ]
            )
        elif query.tools:
            where.append("capsync_tools && %s::text[]")
            params.append(list(query.tools))
        for flag in query.flags:
            where.append("flags @> %s::jsonb")
            params.append(self._json({flag: True}))
        for key, value in query.meta:
            where.append("metadata @> %s::jsonb")
            params.append(self._json({key: value}))
        text = _SELECT + " WHERE " + " AND ".join(where) + " ORDER BY id"
        with self._using("entries") as conn:
            rows = conn.execute(self._sql(text), params).fetchall()
        return [
            Listed(
                node=self._ownership.node_of(found.owner),
                entry=found,
            )
            for row in rows
            if (found := self._decode(row)) is not None
        ]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _batch(self, conn: psycopg.Connection[Any], batch: list[Operation]) -> list[Refused]:
        """One transaction, one round trip: the claim, the renames, the upsert and the
        delete pipelined, every write conditioned on the claim being held."""
        now = int(self._clock())
        stored = {
            op.entry.id: seed_store.stored(op.entry, now)
            for op in batch
            if op.action in ("create", "update")
        }
        gone = [op.entry.id.lower() for op in batch if op.removes]
        healths = [
            {"id": op.entry.id, "health": health_text(op.entry.health)}
            for op in batch
            if op.action == "health"
        ]
        entries = {op.entry.id: op.entry for op in batch}
        meta = self.claim.wanted()
        params = {
            **self.claim.params(),
            "meta": self._json(meta),
            "ids": list(stored),
            "rows": self._json(_rows(stored, entries)),
            "gone": gone,
            "healths": self._json(healths),
        }
        with postgres_schema.sent_as_one(conn):
            conn.execute("BEGIN")
            if meta is not None:
                conn.execute(self._sql(_CLAIM), params)
            node = conn.execute(self._sql(_NODE), (self._ownership.owner,))
            if stored:
                conn.execute(self._sql(_RENAME), params)
            upserted = conn.execute(self._sql(_UPSERT), params) if stored else None
            deleted = conn.execute(self._sql(_DELETE), params) if gone else None
            healed = conn.execute(self._sql(_SET_HEALTH), params) if healths else None
            conn.execute("COMMIT")
        self.claim.update(_meta(node.fetchone()))
        if not self.claim.held:  # another writer took the node: nothing was written
            raise self.claim.lost(self.claim.meta)
        landed: set[str] = set()
        for worker_id, *texts in upserted.fetchall() if upserted else ():
            landed.add(worker_id.lower())
            self._decoder.written(entries[worker_id], tuple(texts), stored[worker_id])
        landed |= {row[0].lower() for row in deleted.fetchall()} if deleted else set()
        landed |= {row[0].lower() for row in healed.fetchall()} if healed else set()
        missed = [worker_id.lower() for worker_id in entries if worker_id.lower() not in landed]
        return self._refusals(conn, missed)

    def _refusals(self, conn: psycopg.Connection[Any], missed: list[str]) -> list[Refused]:
        """Why writes did not land: the row (its id in any case) is another writer's (a
        delete of a row that is already gone has nothing to do)."""
        if not missed:
            return []
        rows = conn.execute(
            self._sql(
                "SELECT id, capsync_owner, capsync_service FROM {s}.worker_capabilities "
                "WHERE lower(id) = ANY(%s)"
            ),
            (missed,),
        ).fetchall()
        return [
            Refused(
                worker_id,
                f"row {worker_id!r} belongs to another writer (capsync_owner "
                f"{holder!r}, capsync_service {service!r}); left as it is",
                foreign=True,
            )
            for worker_id, holder, service in rows
        ]

    def _decode(self, row: tuple[Any, ...]) -> Entry | None:
        """A row as an entry; one that does not decode is reported and left alone."""
        worker_id, *values, health = row
        texts = tuple(values[: len(_SEED)])
        own = dict(zip(_OWN, values[len(_SEED) :], strict=True))

        def load() -> dict[str, Any]:
            return {
                "id": worker_id,
                **{
                    column: json.loads(text)
                    for column, text in zip(_SEED, texts, strict=True)
                    if text is not None
                },
            }

        def decode() -> Entry:
            origin = seed_store.Origin(
                **{name: own[name] or "" for name in _OWN[:-2]}, port=own["port"] or 0
            )
            tags = tuple(own["tools"] or ())
            entry = self._decoder.entry(
                seed_store.Row(worker_id, texts, origin, tags),
                load,
                where=f"worker_capabilities row {worker_id!r}",
                now=int(self._clock()),
            )
            return seed_store.with_health(entry, health)

        return store.decoded(decode, self._ownership.name, id=worker_id)

    def _json(self, value: Any) -> Any:
        return self._psycopg.types.json.Jsonb(value)

    def _sql(self, text: str) -> sql.Composed:
        text = text.replace("{held}", _HELD)
        return self._psycopg.sql.SQL(text).format(s=self._psycopg.sql.Identifier(self._schema))  # type: ignore[no-any-return]

    @contextmanager
    def _using(self, operation: str) -> Iterator[psycopg.Connection[Any]]:
        """Serialise use of the connection; reopen it when it broke; name the failure."""
        with self._lock:
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = self._open()
                yield self._conn
            except self._psycopg.Error as exc:
                if isinstance(exc, self._psycopg.errors.UndefinedTable) and self._conn:
                    # A table dropped under a running daemon: the next use reconnects,
                    # which checks the catalog and recreates it.
                    self._conn.close()
                    self._conn = None
                detail = (str(exc).strip() or type(exc).__name__).splitlines()[0]
                raise RegistryError(f"postgres registry: {operation} failed: {detail}") from exc

    def _open(self) -> psycopg.Connection[Any]:
        conn = self._psycopg.connect(self._dsn, autocommit=True, **self._options)
        try:
            postgres_schema.migrate(conn, self._psycopg, self._schema, self._sql)
        except BaseException:
            conn.close()
            raise
        return conn  # type: ignore[no-any-return]


def _meta(row: tuple[Any, ...] | None) -> dict[str, str] | None:
    """capsync_nodes' meta, as read (None: no row)."""
    return None if row is None else dict(row[0])


def _rows(stored: dict[str, seed_store.Stored], entries: dict[str, Entry]) -> list[dict[str, Any]]:
    """The upsert's records: the seed's columns, then capsync's."""
    return [
        {
            "id": worker_id,
            **{column: item.declaration[column] for column in _SEED},
            **{name: getattr(item.origin, name) for name in _OWN[:-1]},
            "tools": list(item.tags),
            "health": health_text(entries[worker_id].health),
        }
        for worker_id, item in stored.items()
    ]


class PostgresRegistrySettings(StoreSettings):
    """PostgreSQL in the seed's table; ``url`` a libpq connection string, else PG*."""

    environment: ClassVar[Mapping[str, str]] = {"pgoptions": "PGOPTIONS"}

    backend: Literal["postgres"]
    name: KindName = "postgres"
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = (
        None
    )
    schema_name: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] = "public"
    pgoptions: str = Field("", exclude=True)


def build(settings: PostgresRegistrySettings, ctx: BuildContext) -> PostgresRegistry:
    endpoint = PostgresEndpoint(
        dsn=settings.url or "",
        connection=settings.connection(),
        sslmode=settings.sslmode,
        pgoptions=settings.pgoptions,
    )
    return PostgresRegistry(
        endpoint,
        Ownership.of(settings, takeover=ctx.takeover),
        schema=settings.schema_name,
    )


KIND = Kind("postgres", PostgresRegistrySettings, "[DSN]", field_arg("url", required=False), build)
