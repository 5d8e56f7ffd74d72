"""What a cycle tells its operator: a summary line, one log line per problem, the plan."""

from __future__ import annotations

import logging
from typing import Any

from config.events import emit
from daemon.cycle import CycleReport
from daemon.plan import Changes
from daemon.registry.base import ApplyResult
from discovery.codec import Entry

RELEASE = ("--allow-mass-delete for one run, or touch registry.release_file "
           "(default /var/lib/capsync/release-deletions) for one cycle of a running daemon")


def summary(report: CycleReport) -> str:
    """The plan's counts for a dry run; for a sync, what the registry confirmed written,
    with what it refused, what was never sent and what failed without a verdict."""
    if report.registry_error:
        return f"registry failed: {report.registry_error}"
    c = report.changes
    done = report.applied or ApplyResult()
    written = (
        {"create": len(c.create), "update": len(c.update), "delete": len(c.delete)}
        if report.dry_run else done.written
    )
    verb = "plan" if report.dry_run else "sync"
    requests = done.requests
    tail = "" if report.dry_run else f" ({requests} write request{'' if requests == 1 else 's'})"
    failed = "".join(
        f", {count} {what}"
        for count, what in ((len(done.refused), "refused"), (done.unsent, "unsent"),
                            (done.interrupted, "interrupted"))
        if count
    )
    return (
        f"{verb}: {written.get('create', 0)} created, {written.get('update', 0)} updated, "
        f"{written.get('delete', 0)} deleted{failed}, {c.unchanged} unchanged, "
        f"{len(report.invalid)} invalid, {len(c.held)} held, {c.kept} kept{tail}"
    )


def log_problems(report: CycleReport) -> None:
    if report.registry_error:
        emit(logging.ERROR, "registry_failed", error=report.registry_error)
        return
    for source in report.sources:
        if not source.ok:
            emit(logging.ERROR, "source_failed", source=source.name, error=source.error,
                 action="its entries are kept unchanged until it lists again")
    for item in report.invalid:
        for loc, msg in item.error.problems:
            emit(logging.WARNING, "invalid_declaration", source=item.source,
                 ref=item.ref, field=loc or "-", error=msg)
    for conflict in report.conflicts:
        emit(logging.WARNING, "conflict", id=conflict.worker_id, source=conflict.source,
             ref=conflict.ref, reason=conflict.reason)
    if report.changes.held:
        emit(logging.WARNING, "deletions_held", count=len(report.changes.held),
             reason=report.changes.held_reason, release=RELEASE)
    done = report.applied or ApplyResult()
    for refused in done.refused:
        emit(logging.ERROR, "entry_refused", id=refused.id, reason=refused.reason)
    for error in done.errors:
        emit(logging.ERROR, "write_failed", error=error,
             action="its operations are retried by the next cycle")
    if done.unsent:
        emit(logging.WARNING, "writes_unsent", count=done.unsent, reason="stopping")


def plan_rows(changes: Changes) -> list[tuple[str, Entry, str]]:
    rows = [("create", entry, "") for entry in changes.create]
    rows += [("update", u.new, _difference(u.old, u.new)) for u in changes.update]
    rows += [("delete", entry, "") for entry in changes.delete]
    rows += [("held", entry, "deletion held") for entry in changes.held]
    return rows


def plan_table(changes: Changes) -> str:
    rows = [(action, e.id, e.source, e.ref, note) for action, e, note in plan_rows(changes)]
    if not rows:
        return "no changes"
    header = ("ACTION", "ID", "SOURCE", "REF", "CHANGED")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(4)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row[:4], widths, strict=True))
        + f"  {row[4]}"
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def plan_json(report: CycleReport) -> dict[str, Any]:
    c = report.changes
    return {
        "changes": [
            {"action": action, "id": e.id, "source": e.source, "ref": e.ref,
             **({"changed": note} if action == "update" else {})}
            for action, e, note in plan_rows(c)
        ],
        "summary": {
            "create": len(c.create), "update": len(c.update), "delete": len(c.delete),
            "unchanged": c.unchanged, "invalid": len(report.invalid), "held": len(c.held),
            "kept": c.kept, "conflicts": len(report.conflicts),
        },
        "held_reason": c.held_reason,
        "release": RELEASE if c.held else "",
        "failed_sources": [s.name for s in report.sources if not s.ok],
    }


def _difference(old: Entry, new: Entry) -> str:
    """Which fields an update changes, e.g. ``service,tags,meta.static_analysis``."""
    parts = [name for name in ("service", "address", "port", "tags")
             if getattr(old, name) != getattr(new, name)]
    keys = sorted(k for k in old.meta.keys() | new.meta.keys()
                  if old.meta.get(k) != new.meta.get(k) and k != "capsync-digest")
    return ",".join(parts + [f"meta.{k}" for k in keys])
