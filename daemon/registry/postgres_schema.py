"""The PostgreSQL registry's schema: its versions and the migrations between them.

The schema version is recorded in ``capsync_schema``; migrations only add, never drop,
and every step is idempotent, so two daemons migrating at once (serialised by an
advisory lock) cannot conflict and a table dropped by hand is recreated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from config.errors import RegistryError
from discovery.model import CATEGORIES

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

Compose = Callable[[str], "sql.Composed"]  # a statement with {s} made the quoted schema

LOCK = 0x63617073  # advisory lock key ("caps"): one migrating daemon at a time
# The tables capsync needs: when one is missing (dropped by hand), the migrations run
# again whatever the version row says (each step is idempotent).
TABLES = ("worker_capabilities", "capsync_nodes", "capsync_schema")
SEED = (*CATEGORIES.values(), "flags", "metadata")  # the seed's declaration columns

# Target version -> statements bringing the schema from the version before it. {s} is the
# schema. Only IF NOT EXISTS / ADD ... IF NOT EXISTS: an upgrade never drops data, running
# a step twice is harmless, and the seed's own table, when it is already there, is adopted
# as it is.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE IF NOT EXISTS {s}.worker_capabilities (
            id VARCHAR(255) PRIMARY KEY,
            static_analysis_tools JSONB, security_scanning_tools JSONB,
            dynamic_analysis_tools JSONB, fuzzing_tools JSONB, test_framework_tools JSONB,
            flags JSONB, metadata JSONB,
            created_at TIMESTAMP DEFAULT NOW(), updated_at TIMESTAMP DEFAULT NOW())""",
        """CREATE INDEX IF NOT EXISTS idx_tools ON {s}.worker_capabilities
            USING GIN ((static_analysis_tools || security_scanning_tools))""",
        """ALTER TABLE {s}.worker_capabilities
            ADD COLUMN IF NOT EXISTS capsync_owner TEXT,
            ADD COLUMN IF NOT EXISTS capsync_service TEXT,
            ADD COLUMN IF NOT EXISTS capsync_source TEXT,
            ADD COLUMN IF NOT EXISTS capsync_ref TEXT,
            ADD COLUMN IF NOT EXISTS capsync_digest TEXT,
            ADD COLUMN IF NOT EXISTS capsync_address TEXT,
            ADD COLUMN IF NOT EXISTS capsync_meta TEXT,
            ADD COLUMN IF NOT EXISTS capsync_port INTEGER,
            ADD COLUMN IF NOT EXISTS capsync_tools TEXT[]""",
        """CREATE INDEX IF NOT EXISTS worker_capabilities_capsync_owner
            ON {s}.worker_capabilities (capsync_owner)""",
        """CREATE INDEX IF NOT EXISTS worker_capabilities_capsync_tools
            ON {s}.worker_capabilities USING GIN (capsync_tools)""",
        *(
            f"""CREATE INDEX IF NOT EXISTS worker_capabilities_{column}
            ON {{s}}.worker_capabilities USING GIN ({column} jsonb_path_ops)"""
            for column in SEED
        ),
    ),
    # Issue 10: ids compare case-insensitively (an index to find an id in any case) and
    # one writer per owner and service (the node meta the Consul registry keeps).
    2: (
        """CREATE INDEX IF NOT EXISTS worker_capabilities_lower_id
            ON {s}.worker_capabilities (lower(id))""",
        """CREATE TABLE IF NOT EXISTS {s}.capsync_nodes (
            owner TEXT PRIMARY KEY, meta JSONB NOT NULL)""",
    ),
    # Issue 27: each worker's health, in capsync's bookkeeping beside the seed's columns
    # (discovery.health.health_text; NULL for a row written before, written next cycle).
    3: (
        """ALTER TABLE {s}.worker_capabilities
            ADD COLUMN IF NOT EXISTS capsync_health TEXT""",
    ),
}
SCHEMA_VERSION = max(MIGRATIONS)


def migrate(
    conn: psycopg.Connection[Any], psycopg_module: Any, schema: str, compose: Compose
) -> None:
    """Bring the schema up to SCHEMA_VERSION: one transaction, one round trip. Every
    step is idempotent and the version row is added once, so two daemons migrating at
    the same time (serialised by an advisory lock) cannot conflict."""
    version = _version(conn, psycopg_module, schema, compose)
    if version == SCHEMA_VERSION:
        return  # nothing to write: a read-only replica can still be read
    if version > SCHEMA_VERSION:
        raise RegistryError(
            f"postgres registry: schema {schema!r} is at version {version}, newer "
            f"than this capsync understands ({SCHEMA_VERSION}); upgrade capsync"
        )
    with sent_as_one(conn):
        conn.execute("BEGIN")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
        conn.execute(compose("CREATE SCHEMA IF NOT EXISTS {s}"))
        conn.execute(
            compose(
                "CREATE TABLE IF NOT EXISTS {s}.capsync_schema (version INTEGER NOT NULL, "
                "migrated_at TIMESTAMPTZ NOT NULL DEFAULT NOW())"
            )
        )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target]:
                conn.execute(compose(statement))
            conn.execute(
                compose(
                    "INSERT INTO {s}.capsync_schema (version) SELECT %s WHERE NOT EXISTS "
                    "(SELECT 1 FROM {s}.capsync_schema WHERE version >= %s)"
                ),
                (target, target),
            )
        conn.execute("COMMIT")


@contextmanager
def sent_as_one(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Pipeline the statements (one round trip). BEGIN and COMMIT are sent as
    statements, the connection being in autocommit mode: psycopg's own transaction
    block would wait for an answer at each end. On any failure the transaction is
    rolled back, so nothing of it is ever visible."""
    try:
        with conn.pipeline():
            yield
    except BaseException:
        if not conn.broken and not conn.closed:
            conn.execute("ROLLBACK")
        raise


def _version(
    conn: psycopg.Connection[Any], psycopg_module: Any, schema: str, compose: Compose
) -> int:
    """The recorded version; 0 before the first migration, and when a table capsync
    needs is missing from the catalog (dropped by hand), whatever the version row
    says, so that the migrations recreate it."""
    names = [f'"{schema}".{table}' for table in TABLES]
    try:
        with conn.pipeline():  # one round trip
            present = conn.execute(
                "SELECT " + ", ".join("to_regclass(%s) IS NOT NULL" for _ in names), names
            )
            recorded = conn.execute(compose("SELECT MAX(version) FROM {s}.capsync_schema"))
    except (psycopg_module.errors.UndefinedTable, psycopg_module.errors.InvalidSchemaName):
        return 0
    if not all(present.fetchone() or (False,)):
        return 0
    return int((recorded.fetchone() or (0,))[0] or 0)
