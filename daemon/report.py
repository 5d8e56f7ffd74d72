"""What a cycle tells its operator: a summary line, one log line per problem, the plan."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from config.events import emit
from daemon.cycle import CycleReport
from daemon.plan import Changes
from discovery.codec import Entry


def summary(report: CycleReport) -> str:
    if report.registry_error:
        return f"registry failed: {report.registry_error}"
    c = report.changes
    verb = "plan" if report.dry_run else "sync"
    requests = report.applied.requests if report.applied else 0
    tail = "" if report.dry_run else f" ({requests} write request{'' if requests == 1 else 's'})"
    return (
        f"{verb}: {len(c.create)} created, {len(c.update)} updated, {len(c.delete)} deleted, "
        f"{c.unchanged} unchanged, {len(report.invalid)} invalid, {len(c.held)} held, "
        f"{c.kept} kept{tail}{_next_change(report)}"
    )


def _next_change(report: CycleReport) -> str:
    """When a tool's expiry (or an attestation's age) next changes the registry."""
    if report.next_change is None:
        return ""
    try:
        when = datetime.fromtimestamp(report.next_change, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):  # beyond the calendar datetime knows
        when = f"{report.next_change} (Unix seconds)"
    return f"; next expiry {when}"


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
             reason=report.changes.held_reason)
    for refused in report.applied.refused if report.applied else ():
        emit(logging.ERROR, "entry_refused", id=refused.id, reason=refused.reason)


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
        "next_change": report.next_change,
        "failed_sources": [s.name for s in report.sources if not s.ok],
    }


def _difference(old: Entry, new: Entry) -> str:
    """Which fields an update changes, e.g. ``service,tags,meta.static_analysis``."""
    parts = [name for name in ("service", "address", "port", "tags")
             if getattr(old, name) != getattr(new, name)]
    keys = sorted(k for k in old.meta.keys() | new.meta.keys()
                  if old.meta.get(k) != new.meta.get(k) and k != "capsync-digest")
    return ",".join(parts + [f"meta.{k}" for k in keys])
