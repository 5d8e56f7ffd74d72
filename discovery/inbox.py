"""The inbox: registrations pushed by workers, stored durably before they are acknowledged.

Every push front end (REST, WebSocket, gRPC, AMQP) writes here; the push source lists
the live registrations each cycle, so a pushed declaration goes through the same
validation, precedence, plan and guards as a discovered one. It lives in ``discovery``
(beside the sources, not in ``daemon``) because the push source reads it and the
dependency direction is config -> discovery -> daemon: the front ends in ``daemon``
write to it, the source in ``discovery`` reads it.

A registration is live while it has no expiry or its expiry is in the future. A lease
(``ttl``) sets the expiry; registering again renews it. A registration bound to a
connection (``conn``) is renewed by that connection while it lives and left to expire
after a grace period when it ends: it is then marked ``released`` (when its connection
ended), which its health shows. An expired registration is simply no longer listed:
its deletion goes through the plan, so the deletion guard applies.

Two stores behind one interface: SQLite in the state directory (one daemon), Consul KV
(several daemons with leader election: any accepts, the leader syncs);
``discovery/inbox_consul.py``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Collection, Hashable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from config.errors import SourceError

# What a front end reports of each registration call, for the metrics: (front end,
# operation, outcome, seconds). Outcomes: ok, invalid, unavailable, not_found, error.
Observer = Callable[[str, str, str, float], None]


def unobserved(via: str, operation: str, outcome: str, seconds: float) -> None:
    """The Observer of a front end nobody measures."""


# Expired registrations are kept this long (their deletion may be held by the guard and
# reported), then purged from the store.
PURGE_AFTER = 24 * 3600.0


@dataclass(frozen=True)
class Registration:
    """One pushed declaration. ``body`` is the validated declaration as sent (JSON);
    ``via`` names the front end (rest, websocket, ...); ``expires`` is Unix time or None
    (no lease); ``conn`` is the connection it is bound to, if any."""

    id: str
    body: dict[str, Any]
    via: str
    expires: float | None = None
    conn: str | None = None
    # When the connection it was bound to ended (Unix time): it leaves at ``expires``
    # unless the worker registers again.
    released: float | None = None

    @property
    def key(self) -> str:
        """Ids compare as the registries compare them: case-insensitively."""
        return self.id.lower()

    def live(self, now: float) -> bool:
        return self.expires is None or self.expires > now

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "body": self.body,
            "via": self.via,
            "expires": self.expires,
            "conn": self.conn,
            **({"released": self.released} if self.released is not None else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Registration:
        return cls(
            id=data["id"],
            body=data["body"],
            via=data["via"],
            expires=data.get("expires"),
            conn=data.get("conn"),
            released=data.get("released"),
        )


@dataclass(frozen=True)
class InboxView:
    """What a listing needs of the inbox at ``now``, costing what is live, not what
    expired: the live registrations (by key), those whose expiry fell after ``since``
    (the leases that ran out since the last look: as many as ran out, whatever the inbox
    holds), and counts of the expired rows held for purging and of those past it."""

    live: list[Registration]
    expired_since: list[Registration]
    expired: int
    purgeable: int


def view_of(registrations: Sequence[Registration], now: float, since: float | None) -> InboxView:
    """The view of a store that cannot filter on its side (Consul KV)."""
    after = now if since is None else since
    return InboxView(
        live=[r for r in registrations if r.live(now)],
        expired_since=[
            r for r in registrations if r.expires is not None and after < r.expires <= now
        ],
        expired=sum(1 for r in registrations if not r.live(now)),
        purgeable=sum(
            1 for r in registrations if r.expires is not None and r.expires < now - PURGE_AFTER
        ),
    )


class Inbox(Protocol):
    """Raises SourceError when the store cannot be read or written."""

    def put(self, registrations: Sequence[Registration]) -> None:
        """Store (replace by id) durably; returns only once they are stored."""
        ...

    def remove(self, worker_id: str) -> bool:
        """Remove one registration; False when there was none."""
        ...

    def get(self, worker_id: str) -> Registration | None: ...

    def all(self) -> list[Registration]:
        """Every stored registration, live or expired."""
        ...

    def view(self, now: float, since: float | None) -> InboxView:
        """The live registrations at ``now`` and the expired ones counted (InboxView);
        ``since`` None: none counted as newly expired."""
        ...

    def version(self) -> Hashable | None:
        """A value that moves with every write to the store, cheap to ask: while it is
        unchanged the rows are, and a watch need not read them again. None: the store
        has no such value (every look reads it)."""
        ...

    def renew(self, conns: Collection[str], until: float) -> None:
        """Extend to ``until`` the expiry of every registration still bound to one of
        ``conns``; a later expiry is kept (a renewal never shortens a lease)."""
        ...

    def release(self, conn: str, at: float, until: float) -> None:
        """The connection ``conn`` ended at ``at``: its registrations are bound to it no
        more, marked released, and expire at ``until`` (a later expiry is kept)."""
        ...

    def purge(self, before: float) -> int:
        """Drop registrations that expired before ``before``; how many."""
        ...

    def close(self) -> None: ...


_SCHEMA = """CREATE TABLE IF NOT EXISTS registrations (
    key TEXT PRIMARY KEY, record TEXT NOT NULL, conn TEXT, expires REAL)"""
# Listings read the live rows and count the expired ones through this index, so a cycle
# costs what is live, not the expired rows kept until the purge.
_INDEX = "CREATE INDEX IF NOT EXISTS registrations_expires ON registrations (expires)"


_SELECT = "SELECT record, conn, expires FROM registrations"


def _record(r: Registration) -> str:
    """The stored record: all but the columns (conn, expires)."""
    record = {"id": r.id, "body": r.body, "via": r.via}
    return json.dumps(record | ({"released": r.released} if r.released is not None else {}))


def _row(row: tuple[str, str | None, float | None]) -> Registration:
    return Registration.from_json({**json.loads(row[0]), "conn": row[1], "expires": row[2]})


class SqliteInbox:
    """One file (WAL, synchronous=FULL: a registration acknowledged is on disk); one
    connection shared across threads behind a lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout = 5000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute(_SCHEMA)
            self._db.execute(_INDEX)
        except (OSError, sqlite3.Error) as exc:
            raise SourceError(f"inbox {path}: open failed: {exc}") from exc

    def put(self, registrations: Sequence[Registration]) -> None:
        rows = [(r.key, _record(r), r.conn, r.expires) for r in registrations]
        self._write("put", "INSERT OR REPLACE INTO registrations VALUES (?, ?, ?, ?)", rows)

    def remove(self, worker_id: str) -> bool:
        return (
            self._write("remove", "DELETE FROM registrations WHERE key = ?", [(worker_id.lower(),)])
            > 0
        )

    def get(self, worker_id: str) -> Registration | None:
        rows = self._read(f"{_SELECT} WHERE key = ?", (worker_id.lower(),))
        return _row(rows[0]) if rows else None

    def all(self) -> list[Registration]:
        return [_row(row) for row in self._read(f"{_SELECT} ORDER BY key", ())]

    def view(self, now: float, since: float | None) -> InboxView:
        after = now if since is None else min(since, now)
        # No ORDER BY: sorting in SQL would walk the primary key over every row; the
        # expiry index finds the live ones alone.
        rows = sorted(
            (
                _row(row)
                for row in self._read(f"{_SELECT} WHERE expires IS NULL OR expires > ?", (after,))
            ),
            key=lambda r: r.key,
        )
        [(expired, purgeable)] = self._read(
            "SELECT count(*), count(CASE WHEN expires < ? THEN 1 END) FROM registrations "
            "WHERE expires <= ?",
            (now - PURGE_AFTER, now),
        )
        return InboxView(
            live=[r for r in rows if r.live(now)],
            expired_since=[r for r in rows if not r.live(now)],
            expired=expired,
            purgeable=purgeable,
        )

    def version(self) -> Hashable:
        """Commits by other connections move ``data_version``; this connection's own
        writes move ``total_changes`` (the rows it changed since it opened)."""
        try:
            with self._lock:
                [(other,)] = self._db.execute("PRAGMA data_version").fetchall()
                return (other, self._db.total_changes)
        except sqlite3.Error as exc:
            raise SourceError(f"inbox {self.path}: read failed: {exc}") from exc

    def renew(self, conns: Collection[str], until: float) -> None:
        self._write(
            "renew",
            "UPDATE registrations SET expires = ? WHERE conn = ? AND expires < ?",
            [(until, conn, until) for conn in conns],
        )

    def release(self, conn: str, at: float, until: float) -> None:
        with self._lock:
            rows = self._db.execute(f"{_SELECT} WHERE conn = ?", (conn,)).fetchall()
        released = [replace(_row(row), conn=None, released=at) for row in rows]
        self._write(
            "release",
            "UPDATE registrations SET record = ?, conn = NULL, expires = max(expires, ?) "
            "WHERE key = ? AND conn = ?",
            [(_record(r), until, r.key, conn) for r in released],
        )

    def purge(self, before: float) -> int:
        return self._write("purge", "DELETE FROM registrations WHERE expires < ?", [(before,)])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        try:
            with self._lock:
                return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise SourceError(f"inbox {self.path}: read failed: {exc}") from exc

    def _write(self, operation: str, sql: str, rows: list[tuple[Any, ...]]) -> int:
        if not rows:
            return 0
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    changed = sum(self._db.execute(sql, row).rowcount for row in rows)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return changed
        except sqlite3.Error as exc:
            raise SourceError(f"inbox {self.path}: {operation} failed: {exc}") from exc
