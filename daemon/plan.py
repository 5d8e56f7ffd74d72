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
    present, equal,      present                health       (only for a registry that
      health differs                                          keeps health)

Health is not part of an entry's equality: an entry whose declaration is unchanged but
whose health status changed is a health update, which rewrites nothing else.

A registry set to ``unhealthy = "withdraw"`` keeps critical workers out: a critical
worker it holds is withdrawn (removed like a deletion, but neither gated nor guarded: it
comes back as a create when it recovers), and one it does not hold is not created.

Ids are matched case-folded, as Consul and SQLite compare them: ``W1`` owned and ``w1``
desired are one worker, and a case-only rename is an update.

Deletions are held, not dropped, when the first-sync gate is closed (not every source
has listed once since start) or when they exceed the mass-deletion guard. Policies then
filter what remains: ``upsert-only`` never deletes, ``create-only`` only creates.
Only owned entries are ever passed in, so nothing else can be updated or deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace

from discovery import health
from discovery.codec import Entry

OWNER_SCOPE = "*"  # the guard's key for "every owned entry"; other keys are source names


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
    # Node meta the apply records beside the writer claim: the guard's marks
    # (daemon/guard_marks.py), written in the same request as the first batch.
    record: Mapping[str, str] = field(default_factory=dict)
    # Entries whose declaration is unchanged and whose health status changed.
    health: tuple[Update, ...] = ()
    # Critical workers taken out of a registry set to withdraw (old: as held; new: as
    # desired, with its health), and how many critical workers it does not hold.
    withdraw: tuple[Update, ...] = ()
    withdrawn: int = 0

    @property
    def writes(self) -> int:
        changed = len(self.update) + len(self.health) + len(self.withdraw)
        return len(self.create) + len(self.delete) + changed

    @property
    def health_changes(self) -> int:
        """Workers whose health this apply changes (created ones are not counted)."""
        changed = sum(u.old.health.status != u.new.health.status for u in self.update)
        return len(self.health) + changed


@dataclass(frozen=True)
class DeletionGuard:
    """Self-preservation, as Netflix Eureka does it: hold deletions that would take the
    owned entries, of any one source or of the owner as a whole, below a fraction of
    their high-water mark over the guard's window. Per source, so one emptied source
    is held however many others there are; against a high-water mark, so deleting just
    under the limit in each cycle cannot empty the registry either."""

    max_fraction: float = 0.5
    min_count: int = 5
    allow: bool = False
    window: float = 3600.0

    def blocks(self, deleting: int, owned: int, high_water: int) -> bool:
        lost = max(high_water, owned) - (owned - deleting)
        return (
            not self.allow
            and deleting > 0
            and lost > self.min_count
            and lost > self.max_fraction * max(high_water, owned)
        )


def counts(owned: Iterable[Entry]) -> dict[str, int]:
    """Owned entries per guard scope: per source, and the owner's total."""
    out: dict[str, int] = {OWNER_SCOPE: 0}
    for entry in owned:
        out[OWNER_SCOPE] += 1
        out[entry.source] = out.get(entry.source, 0) + 1
    return out


Policy = Callable[[Changes], Changes]


def _no_deletes(changes: Changes) -> Changes:
    return replace(changes, delete=())


def _create_only(changes: Changes) -> Changes:
    return replace(
        changes,
        update=(),
        delete=(),
        withdraw=(),
        unchanged=changes.unchanged + len(changes.update) + len(changes.withdraw),
    )


POLICIES: Mapping[str, Policy] = {
    "sync": lambda changes: changes,
    "upsert-only": _no_deletes,
    "create-only": _create_only,
}


@dataclass(frozen=True)
class Restraints:
    """What this cycle holds the plan back by: ``keep``, the case-folded ids to leave
    exactly as they are (their source failed, their declaration is invalid);
    ``deletions_open``, the first-sync gate (every source has listed since start); and
    ``high_water``, the guard's memory (scope -> the most owned entries seen in its
    window; see ``counts``)."""

    keep: Collection[str] = frozenset()
    deletions_open: bool = True
    high_water: Mapping[str, int] = field(default_factory=dict)
    # The registry keeps health: a change of health status alone is planned (a health
    # update); otherwise it is not this registry's business.
    health: bool = False
    # The registry keeps critical workers out (``unhealthy = "withdraw"``).
    withdraw: bool = False


def plan(
    owned: Mapping[str, Entry],
    desired: Mapping[str, Entry],
    *,
    restraints: Restraints = Restraints(),
    guard: DeletionGuard = DeletionGuard(),
    policy: str = "sync",
) -> Changes:
    """Diff ``owned`` (id -> entry this owner wrote) against ``desired`` (id -> entry)."""
    folded_owned = {worker_id.casefold(): entry for worker_id, entry in owned.items()}
    folded_desired = {worker_id.casefold(): entry for worker_id, entry in desired.items()}
    create, update, delete, healths, withdraw = [], [], [], [], []
    unchanged = kept = withdrawn = 0
    withdrawing, keep, keeps_health = restraints.withdraw, restraints.keep, restraints.health
    for worker_id in sorted(folded_owned.keys() | folded_desired.keys()):
        old, new = folded_owned.get(worker_id), folded_desired.get(worker_id)
        if old is not None and new is old and not withdrawing and worker_id not in keep:
            # The most common case first (an unchanged entry, held as the desired object):
            # what the chain below decides for it, in fewer steps.
            if keeps_health and health.changed(old.health, new.health):
                healths.append(Update(old, new))
            else:
                unchanged += 1
            continue
        if (
            withdrawing
            and new is not None
            and new.health.status == "critical"
            and worker_id not in keep
        ):
            if old is None:
                withdrawn += 1
            else:
                withdraw.append(Update(old, new))
        elif old is None and new is not None:
            create.append(new)
        elif old is None:
            continue
        elif worker_id in keep:
            kept += 1
        elif new is None:
            delete.append(old)
        elif not (new is old or new == old):  # the same object: an entry kept as desired
            update.append(Update(old, new))
        elif keeps_health and health.changed(old.health, new.health):
            healths.append(Update(old, new))
        else:
            unchanged += 1
    held, held_reason = _held(delete, owned.values(), restraints, guard)
    changes = Changes(
        create=tuple(create),
        update=tuple(update),
        delete=tuple(e for e in delete if e.id not in held),
        unchanged=unchanged,
        held=tuple(e for e in delete if e.id in held),
        held_reason=held_reason,
        kept=kept,
        health=tuple(healths),
        withdraw=tuple(withdraw),
        withdrawn=withdrawn + len(withdraw),
    )
    return POLICIES[policy](changes)


def _held(
    delete: list[Entry],
    owned: Iterable[Entry],
    restraints: Restraints,
    guard: DeletionGuard,
) -> tuple[set[str], str]:
    """The ids of the deletions to hold and why: per source, then for the owner."""
    high_water = restraints.high_water
    if not delete:
        return set(), ""
    if not restraints.deletions_open:
        return {e.id for e in delete}, "first sync: not every source has listed successfully yet"
    now, deleting = counts(owned), counts(delete)
    reasons, held = [], set()
    for scope in sorted(s for s in deleting if s != OWNER_SCOPE):
        if guard.blocks(deleting[scope], now[scope], high_water.get(scope, 0)):
            held |= {e.id for e in delete if e.source == scope}
            reasons.append(
                _reason(
                    f"source {scope!r}",
                    deleting[scope],
                    now[scope],
                    high_water.get(scope, 0),
                    guard,
                )
            )
    rest = len(delete) - len(held)
    total, mark = now[OWNER_SCOPE], high_water.get(OWNER_SCOPE, 0)
    if rest and guard.blocks(rest, total, mark):
        held = {e.id for e in delete}
        reasons.append(_reason("the owner", rest, total, mark, guard))
    return held, "; ".join(reasons)


def _reason(scope: str, deleting: int, owned: int, high_water: int, guard: DeletionGuard) -> str:
    peak = max(high_water, owned)
    return (
        f"mass-deletion guard: {scope} would go from {peak} entries (high-water mark over "
        f"{guard.window:g}s) to {owned - deleting}, deleting {deleting} now (held when it "
        f"would lose more than {guard.max_fraction:.0%} and more than {guard.min_count})"
    )
