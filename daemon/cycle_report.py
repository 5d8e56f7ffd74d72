"""What one cycle found and did: per source, per registry, and as a whole. The types
the pipeline fills in and the operator's views (log, status, metrics, events) read."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field

from config.events import emit
from daemon.plan import Changes
from daemon.registry.base import ApplyResult
from discovery.codec import Entry
from discovery.normalise import Invalid


@dataclass
class SourceOutcome:
    name: str
    ok: bool = True
    error: str = ""
    found: int = 0
    invalid: int = 0
    retry_after: float | None = None  # the source's peer asked for this wait (429/503)
    seconds: float = 0.0  # how long its listing took, failed or not (metrics)


@dataclass(frozen=True)
class Conflict:
    worker_id: str
    source: str
    ref: str
    reason: str


@dataclass(frozen=True)
class RegistryReport:
    """One registry's part of a cycle: its plan and what it made of it."""

    name: str
    changes: Changes = field(default_factory=Changes)
    conflicts: tuple[Conflict, ...] = ()
    applied: ApplyResult | None = None
    registry_error: str = ""
    desired: dict[str, Entry] = field(default_factory=dict)
    owned: Mapping[str, Entry] = field(default_factory=dict)  # the snapshot, before apply
    retry_after: float | None = None  # the registry asked for this wait (429/503)
    apply_seconds: float | None = None  # how long its apply took (None: nothing applied)
    claim_held_elsewhere: bool = False  # another writer holds its writer claim
    keeps_health: bool = False  # the registry keeps each entry's health (Snapshot.health)

    @property
    def ok(self) -> bool:
        complete = self.applied.complete if self.applied else True
        return not self.registry_error and complete


@dataclass(frozen=True)
class CycleReport:
    sources: tuple[SourceOutcome, ...] = ()
    invalid: tuple[Invalid, ...] = ()
    registries: tuple[RegistryReport, ...] = ()
    dry_run: bool = False
    # The next instant (Unix seconds) at which time alone changes a desired entry: a
    # tool's expiry passing, an attestation ageing out. The daemon runs a cycle then.
    next_change: int | None = None
    # The invalid declarations to log: those new or changed since the last cycle (None:
    # every one). The others are counted, in the summary and /metrics, not logged again.
    invalid_news: tuple[Invalid, ...] | None = None

    @property
    def retry_after(self) -> float | None:
        """The longest wait a peer asked for (``Retry-After``), for the loop's retry."""
        waits = [s.retry_after for s in self.sources if s.retry_after is not None]
        waits += [r.retry_after for r in self.registries if r.retry_after is not None]
        return max(waits, default=None)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.sources) and all(r.ok for r in self.registries)


def unexpected(exc: BaseException, where: str) -> str:
    """An exception nobody raised on purpose, as one short line for the error report;
    its traceback goes to the debug log (one line, JSON-quoted)."""
    emit(
        logging.DEBUG, "traceback", where=where, traceback="".join(traceback.format_exception(exc))
    )
    text = " ".join(str(exc).split())[:300]
    return f"unexpected {type(exc).__name__}" + (f": {text}" if text else "")
