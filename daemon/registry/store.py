"""What the Redis and PostgreSQL registry kinds share: their connection settings, how a
secret file is read, and their write loop (which writes they refuse before sending
anything, and how a batch's answers are counted)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from config.errors import DeclarationError, RegistryError
from config.events import emit
from config.settings import ClientTls, Duration, RegistrySettingsBase
from daemon.plan import Changes
from daemon.registry import writer as writers
from daemon.registry.base import ApplyResult, Operation, Refused, Snapshot, Tally, operations
from daemon.registry.ownership import Ownership
from discovery import seed_store
from discovery.codec import Entry


class StoreSettings(RegistrySettingsBase, ClientTls):
    """``url``, ``password_file``, the TLS files (``ca_file``, and ``cert_file`` with
    ``key_file``) and ``timeout`` (connect and per command) of a Redis or PostgreSQL
    server."""

    url: str | None = None
    password_file: Path | None = None
    timeout: Duration = 10.0

    def connection(self) -> StoreConnection:
        return StoreConnection(
            password_file=self.password_file,
            ca_file=self.ca_file,
            cert_file=self.cert_file,
            key_file=self.key_file,
            timeout=self.timeout,
        )


@dataclass(frozen=True)
class StoreConnection:
    """How to reach a Redis or PostgreSQL server beyond its address: the password file,
    the TLS files and the time-out (connect and per command), as ``StoreSettings`` names
    them, handed to either kind's endpoint."""

    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    timeout: float = 10.0


class Interrupted(Exception):
    """A store's batch request failed without a verdict (connection lost, time-out):
    its operations may or may not have landed; the next cycle finds out."""


class Rejected(Exception):
    """The server answered a store's batch with an error (a read-only server, a failed
    statement): the script was refused or the transaction rolled back, so nothing of the
    batch was written; its operations are refused with the server's reason.
    ``by_entry``: the error is about a value (U+0000, a value over a limit), so some
    entry of the batch is at fault, not the server: the batch is split to find it."""

    def __init__(self, reason: str, *, by_entry: bool = False) -> None:
        super().__init__(reason)
        self.by_entry = by_entry


class Claim:
    """A store's writer claim (daemon/registry/writer.py) on the owner's node meta as
    last read, which a store keeps beside its entries (a Redis hash, a PostgreSQL row).
    Each batch writes ``wanted()`` only while the holder is still ``seen``, in the
    batch's own script or transaction, and writes no entry unless this writer holds it."""

    def __init__(self, registry: str, ownership: Ownership) -> None:
        self.registry, self.ownership = registry, ownership
        self.field = writers.writer_key(ownership.service)
        self.meta: dict[str, str] | None = None
        self.read = False  # has the meta been read since this registry opened?
        self.record: Mapping[str, str] = {}  # the apply's node meta to record (guard)

    def update(self, meta: Mapping[str, str] | None) -> None:
        self.meta, self.read = (dict(meta) if meta else None), True

    @property
    def seen(self) -> str:
        return (self.meta or {}).get(self.field, "")

    @property
    def held(self) -> bool:
        return self.seen == self.ownership.writer

    def wanted(self) -> dict[str, str] | None:
        """The meta to write (None: already held); RegistryError when another writer
        holds it."""
        return writers.claim(
            self.meta, self.ownership, where=f"{self.registry} registry", record=self.record
        )

    def lost(self, meta: Mapping[str, str] | None) -> RegistryError:
        """A batch found another holder than was read: nothing of it was written."""
        self.update(meta)
        self.record = {}
        self.wanted()  # raises when another writer holds it
        return RegistryError(
            f"{self.registry} registry: the writer of service "
            f"{self.ownership.service!r} changed while this capsync wrote; the next "
            "cycle retries"
        )

    def params(self) -> dict[str, str]:
        return {
            "owner": self.ownership.owner,
            "service": self.ownership.service.lower(),
            "field": self.field,
            "writer": self.ownership.writer,
            "seen": self.seen,
        }

    def ours(self, entry: Entry) -> bool:
        return self.ownership.ours(entry.owner, entry.service)


def snapshot(
    found: Iterable[tuple[str, Entry | None]],
    claim: Claim,
    decoder: seed_store.Decoder,
    others: Iterable[str] = (),
) -> Snapshot:
    """A store's snapshot from its rows (id, the entry or None when it is not decoded):
    this owner's entries of this service are owned; every other id, case-folded, is
    foreign (another owner's or service's, or one that no longer decodes)."""
    claim.wanted()  # another writer holding the owner's node fails the cycle
    owned: dict[str, Entry] = {}
    foreign = {worker_id.casefold() for worker_id in others}
    for worker_id, entry in found:
        if entry is not None and claim.ours(entry):
            owned[worker_id] = entry
        else:
            foreign.add(worker_id.casefold())
    decoder.keep_only(owned.keys())
    # Each store keeps its entries' health in its bookkeeping (beside the seed's layout).
    return Snapshot(owned=owned, foreign=frozenset(foreign), meta=claim.meta, health=True)


Send = Callable[[list[Operation]], list[Refused]]  # one atomic batch; what it refused


class BatchStore(Protocol):
    """A store as its write loop sees it: its claim, its snapshot (which reads the
    claim), its batch size and its atomic send of one batch."""

    claim: Claim
    batch_size: int

    def snapshot(self) -> Snapshot: ...

    def send(self, batch: list[Operation]) -> list[Refused]: ...


def apply_batches(
    target: BatchStore, changes: Changes, stop: threading.Event | None
) -> ApplyResult:
    """The write loop of the stores (Redis, PostgreSQL): who holds the node is read
    first (the snapshot) when no snapshot did; an entry carrying another owner is
    refused before anything is sent; the rest go ``batch_size`` at a time, each batch
    one atomic request that checks the claim and ownership itself (``send``). A case-only
    rename is one update: the store replaces the entry under its case-folded id in the
    same request. A batch the server rejects as a whole (Rejected) is refused, one whose
    request fails without a verdict (Interrupted) is counted interrupted, and the next
    batch is tried all the same; RegistryError from ``send`` (the writer claim lost)
    fails the whole apply."""
    tally = Tally()
    claim = target.claim
    if changes.writes and not claim.read:
        target.snapshot()
    claim.record = changes.record
    ops: list[Operation] = []
    for op in operations(changes):
        if not op.removes and (reason := claim.ownership.foreign_owner(op.entry.owner)):
            tally.refuse([op], reason)
        else:
            ops.append(op)
    for chunk in tally.batches(ops, target.batch_size, stop):
        _send_isolating(chunk, target.send, tally)
    return tally.result()


def _send_isolating(chunk: list[Operation], send: Send, tally: Tally) -> None:
    """One batch; when the server rejects it for a value it cannot hold, the halves are
    sent again, down to the entry at fault, which alone is refused with the server's
    reason: what one entry cannot be stored as never blocks the rest."""
    try:
        refused = send(chunk)
    except Rejected as exc:
        if exc.by_entry and len(chunk) > 1:
            half = len(chunk) // 2
            for part in (chunk[:half], chunk[half:]):
                tally.requests += 1
                _send_isolating(part, send, tally)
            return
        tally.refuse(chunk, str(exc))
        return
    except Interrupted as exc:
        tally.fail(chunk, str(exc))
        return
    verdicts = {item.id.casefold(): item for item in refused}
    tally.wrote([op for op in chunk if op.entry.id.casefold() not in verdicts])
    for op in chunk:
        if (verdict := verdicts.get(op.entry.id.casefold())) is not None:
            tally.answered(op, verdict)


def decoded(decode: Callable[[], Entry], registry: str, **where: str) -> Entry | None:
    """The entry ``decode`` reads from a stored row, or None when it is not one: reported
    as ``bad_registry_entry`` with ``where`` it is, and left alone."""
    try:
        return decode()
    except (ValueError, DeclarationError) as exc:
        emit(logging.WARNING, "bad_registry_entry", registry=registry, **where, problem=str(exc))
        return None
