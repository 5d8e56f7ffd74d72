"""What a cycle tells its operator: a summary line, one log line per problem, the plan."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from config.events import emit
from daemon.cycle_report import CycleReport, RegistryReport
from daemon.plan import Changes
from daemon.registry.base import ApplyResult
from daemon.text_table import render
from discovery.codec import Entry

RELEASE = (
    "--allow-mass-delete for one run, or touch the registry's release_file "
    "(default release-deletions in $STATE_DIRECTORY or /var/lib/capsync) for one cycle "
    "of a running daemon"
)


def summary(report: CycleReport) -> str:
    """The cycle in one line; with several registries, one part per registry."""
    parts = [(reg.name, _summary(report, reg)) for reg in report.registries]
    if len(parts) == 1:
        return parts[0][1]
    return "; ".join(f"{name}: {text}" for name, text in parts)


def _summary(report: CycleReport, reg: RegistryReport) -> str:
    """The plan's counts for a dry run; for a sync, what the registry confirmed written,
    with what it refused, what was never sent and what failed without a verdict."""
    if reg.registry_error:
        return f"registry failed: {reg.registry_error}"
    c = reg.changes
    done = reg.applied or ApplyResult()
    written = (
        {
            "create": len(c.create),
            "update": len(c.update),
            "delete": len(c.delete),
            "health": len(c.health),
            "withdraw": len(c.withdraw),
        }
        if report.dry_run
        else done.written
    )
    verb = "plan" if report.dry_run else "sync"
    requests = done.requests
    tail = "" if report.dry_run else f" ({requests} write request{'' if requests == 1 else 's'})"
    failed = "".join(
        f", {count} {what}"
        for count, what in (
            (len(done.refused), "refused"),
            (done.unsent, "unsent"),
            (done.interrupted, "interrupted"),
        )
        if count
    )
    return (
        f"{verb}: {written.get('create', 0)} created, {written.get('update', 0)} updated, "
        f"{written.get('delete', 0)} deleted{failed}, {c.unchanged} unchanged, "
        f"{len(report.invalid)} invalid, {len(reg.conflicts)} conflicts, {len(c.held)} held, "
        f"{c.kept} kept, {written.get('health', 0)} health updates, "
        f"{written.get('withdraw', 0)} withdrawn{tail}"
        f"{_next_change(report)}"
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
    for source in report.sources:
        if not source.ok:
            emit(
                logging.ERROR,
                "source_failed",
                source=source.name,
                error=source.error,
                action="its entries are kept unchanged until it lists again",
            )
    for item in report.invalid if report.invalid_news is None else report.invalid_news:
        for loc, msg in item.error.problems:
            emit(
                logging.WARNING,
                "invalid_declaration",
                source=item.source,
                ref=item.ref,
                field=loc or "-",
                error=msg,
            )
    for reg in report.registries:
        for conflict in reg.conflicts:
            emit(
                logging.WARNING,
                "conflict",
                id=conflict.worker_id,
                source=conflict.source,
                ref=conflict.ref,
                reason=conflict.reason,
                registry=reg.name,
            )
        if reg.registry_error:
            emit(logging.ERROR, "registry_failed", error=reg.registry_error, registry=reg.name)
        if reg.changes.held:
            emit(
                logging.WARNING,
                "deletions_held",
                count=len(reg.changes.held),
                reason=reg.changes.held_reason,
                registry=reg.name,
                release=RELEASE,
            )
        done = reg.applied or ApplyResult()
        for refused in done.refused:
            emit(
                logging.ERROR,
                "entry_refused",
                id=refused.id,
                reason=refused.reason,
                registry=reg.name,
            )
        for error in done.errors:
            emit(
                logging.ERROR,
                "write_failed",
                error=error,
                registry=reg.name,
                action="its operations are retried by the next cycle",
            )
        if done.unsent:
            emit(
                logging.WARNING,
                "writes_unsent",
                count=done.unsent,
                reason="stopping",
                registry=reg.name,
            )


def plan_rows(changes: Changes) -> list[tuple[str, Entry, str]]:
    rows = [("create", entry, "") for entry in changes.create]
    rows += [("update", u.new, _difference(u.old, u.new)) for u in changes.update]
    rows += [("delete", entry, "") for entry in changes.delete]
    rows += [("held", entry, "deletion held") for entry in changes.held]
    rows += [
        ("health", u.new, f"{u.old.health.status} -> {u.new.health.status}") for u in changes.health
    ]
    rows += [("withdraw", u.new, u.new.health.output) for u in changes.withdraw]
    return rows


def plan_table(changes: Changes) -> str:
    rows = [(action, e.id, e.source, e.ref, note) for action, e, note in plan_rows(changes)]
    if not rows:
        return "no changes"
    return render([("ACTION", "ID", "SOURCE", "REF", "CHANGED"), *rows])


def plan_json(report: CycleReport, reg: RegistryReport) -> dict[str, Any]:
    c = reg.changes
    return {
        "changes": [
            {
                "action": action,
                "id": e.id,
                "source": e.source,
                "ref": e.ref,
                **({"changed": note} if action in ("update", "health") else {}),
            }
            for action, e, note in plan_rows(c)
        ],
        "summary": {
            "create": len(c.create),
            "update": len(c.update),
            "delete": len(c.delete),
            "unchanged": c.unchanged,
            "invalid": len(report.invalid),
            "held": len(c.held),
            "kept": c.kept,
            "conflicts": len(reg.conflicts),
            "health": len(c.health),
            "withdrawn": c.withdrawn,
        },
        "held_reason": c.held_reason,
        "release": RELEASE if c.held else "",
        "next_change": report.next_change,
        "failed_sources": [s.name for s in report.sources if not s.ok],
    }


def _difference(old: Entry, new: Entry) -> str:
    """Which fields an update changes, e.g. ``service,tags,meta.static_analysis``."""
    parts = [
        name
        for name in ("service", "address", "port", "tags")
        if getattr(old, name) != getattr(new, name)
    ]
    keys = sorted(
        k
        for k in old.meta.keys() | new.meta.keys()
        if old.meta.get(k) != new.meta.get(k) and k != "capsync-digest"
    )
    return ",".join(parts + [f"meta.{k}" for k in keys])
