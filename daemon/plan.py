"""The diff: owned registry entries x desired entries -> the changes to make.

A pure function. It reads its inputs, returns a frozen ``Changes`` and does no I/O,
logging or counting; the cycle acts on the result.

    owned (registry)     desired (sources)      action
    -------------------  ---------------------  ------------------------------------
    absent               present                create
    present, equal       present                unchanged
    present, different   present                update            (unless kept)
    present              absent                 delete            (unless kept; held
                                                                   by the gates below)
    kept                 anything               unchanged: its source failed or its
                                                declaration was invalid this cycle

Deletions are held, not dropped, when the first-sync gate is closed (not every source
has listed once since start) or when they exceed the mass-deletion guard. Policies then
filter what remains: ``upsert-only`` never deletes, ``create-only`` only creates.
Only owned entries are ever passed in, so nothing else can be updated or deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace

from discovery.codec import Entry


@dataclass(frozen=True)
class Update:
    old: Entry
    new: Entry


@dataclass(frozen=True)
class Changes:
    create: tuple[Entry, ...] = ()
    update: tuple[Update, ...] = ()
    delete: tuple[Entry, ...] = ()
    unchanged: int = 0
    held: tuple[Entry, ...] = ()
    held_reason: str = ""
    kept: int = 0

    @property
    def writes(self) -> int:
        return len(self.create) + len(self.update) + len(self.delete)


@dataclass(frozen=True)
class DeletionGuard:
    """Hold a cycle's deletions when they exceed both a fraction and a count of the owned
    entries: a source that suddenly lists nothing must not empty the registry."""

    max_fraction: float = 0.5
    min_count: int = 5
    allow: bool = False

    def blocks(self, deleting: int, owned: int) -> bool:
        return (
            not self.allow and deleting > self.min_count and deleting > self.max_fraction * owned
        )


Policy = Callable[[Changes], Changes]


def _no_deletes(changes: Changes) -> Changes:
    return replace(changes, delete=())


def _create_only(changes: Changes) -> Changes:
    return replace(changes, update=(), delete=(), unchanged=changes.unchanged + len(changes.update))


POLICIES: Mapping[str, Policy] = {
    "sync": lambda changes: changes,
    "upsert-only": _no_deletes,
    "create-only": _create_only,
}


def plan(
    owned: Mapping[str, Entry],
    desired: Mapping[str, Entry],
    *,
    keep: Collection[str] = frozenset(),
    deletions_open: bool = True,
    guard: DeletionGuard = DeletionGuard(),
    policy: str = "sync",
) -> Changes:
    """Diff ``owned`` (id -> entry this owner wrote) against ``desired`` (id -> entry)."""
    create, update, delete = [], [], []
    unchanged = kept = 0
    for worker_id in sorted(owned.keys() | desired.keys()):
        old, new = owned.get(worker_id), desired.get(worker_id)
        if old is None and new is not None:
            create.append(new)
        elif old is None:
            continue
        elif worker_id in keep:
            kept += 1
        elif new is None:
            delete.append(old)
        elif new == old:
            unchanged += 1
        else:
            update.append(Update(old, new))
    held_reason = ""
    if delete and not deletions_open:
        held_reason = "first sync: not every source has listed successfully yet"
    elif guard.blocks(len(delete), len(owned)):
        held_reason = (
            f"mass-deletion guard: {len(delete)} of {len(owned)} owned entries "
            f"(limit {guard.max_fraction:.0%} and more than {guard.min_count})"
        )
    changes = Changes(
        create=tuple(create),
        update=tuple(update),
        delete=() if held_reason else tuple(delete),
        unchanged=unchanged,
        held=tuple(delete) if held_reason else (),
        held_reason=held_reason,
        kept=kept,
    )
    return POLICIES[policy](changes)
