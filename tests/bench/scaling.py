"""The scaling run of the bench: ``python -m tests.bench --sizes 10000,50000,100000``.

At each size, in child processes of their own (tests/bench/child.py), against a fresh
Consul double (or SQLite file):
- files -> Consul (of 1.14 or later: ``max_txn_ops = 128``, an entry's service and its
  health check two operations, so the cold writes are ceil(N/64) and the node's): cold
  sync; ``reread``, the first cycle after a write (the registry is read in full again);
  ``steady``, a cycle with nothing changed; ``churn``, a cycle after 1% of the files
  changed; ``once``, a fresh process's first cycle (``run --once``);
- files -> SQLite, Redis, PostgreSQL (private servers, tests/bench/stores.py): cold,
  reread, steady;
- consul source -> Consul: the source listing N services others registered, cold,
  reread, steady.
It prints one table: each phase's CPU seconds and peak RSS, per worker (microseconds and
kilobytes), at each size, and every target with its figure and met or missed. The
churn soak (``--soak CYCLES``) runs at the smallest size: CYCLES cycles each after 1%
churn, in one process, printing its RSS and cycle CPU at the start and the end.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.bench.stores import STORES
from tests.doubles.consul import ConsulDouble

Run = dict[str, dict[str, Any]]  # phase -> the child's figures


def run_size(
    n: int,
    child: Callable[..., Any],
    write_fleet: Callable[[Path, int], None],
    seed_consul: Callable[[ConsulDouble, int], None],
    churn: Callable[[Path, float], int],
) -> dict[str, Run]:
    """Every measured phase at ``n`` workers."""
    out: dict[str, Run] = {}
    with tempfile.TemporaryDirectory(prefix="capsync-bench-scale-") as tmp:
        fleet = Path(tmp) / "fleet"
        fleet.mkdir()
        write_fleet(fleet, n)
        # The daemon's state directory: the fresh process of ``once`` starts from what the
        # daemon left there when it stopped, as a restart or `run --once` would.
        state = Path(tmp) / "state"
        state.mkdir()
        with ConsulDouble(max_txn_ops=128) as double:
            daemon = child("capsync-txn128", fleet, double.address, double, state=state)
            files: Run = {phase: daemon.cycle() for phase in ("cold", "reread", "steady")}
            churn(fleet, 0.01)
            files["churn"] = daemon.cycle()
            daemon.close()
            once = child("capsync-txn128", fleet, double.address, double, state=state)
            files["once"] = once.cycle()
            once.close()
        out["files->consul"] = files
        database = child("capsync-sqlite", fleet, str(Path(tmp) / "registry.db"))
        out["files->sqlite"] = {p: database.cycle() for p in ("cold", "reread", "steady")}
        database.close()
        for store, server in STORES.items():
            with server() as (port, url):
                process = child("capsync-store", fleet, url.format(port=port))
                out[f"files->{store}"] = {p: process.cycle() for p in ("cold", "reread", "steady")}
                process.close()
        with ConsulDouble(max_txn_ops=64) as double:
            seed_consul(double, n)
            source = child("capsync-consul", "legacy", double.address, double)
            out["consul->consul"] = {p: source.cycle() for p in ("cold", "reread", "steady")}
            source.close()
    return out


def soak(
    n: int, cycles: int, child: Callable[..., Any], write_fleet: Callable[[Path, int], None]
) -> dict[str, Any]:
    """``cycles`` cycles of one process, each after 1% of the files changed."""
    with tempfile.TemporaryDirectory(prefix="capsync-bench-soak-") as tmp:
        fleet = Path(tmp)
        write_fleet(fleet, n)
        with ConsulDouble(max_txn_ops=128) as double:
            daemon = child("capsync-txn128", fleet, double.address, double)
            daemon.cycle()  # cold
            figures = []
            for i in range(cycles):
                rewrite(fleet, i)
                figures.append(daemon.cycle())
            daemon.close()
    first, last = figures[: max(1, cycles // 10)], figures[-max(1, cycles // 10) :]
    return {
        "workers": n,
        "cycles": cycles,
        "rss_start_mb": figures[0]["rss_mb"],
        "rss_end_mb": figures[-1]["rss_mb"],
        "peak_rss_mb": max(f["peak_rss_mb"] for f in figures),
        "cpu_start_s": round(sum(f["cpu_s"] for f in first) / len(first), 3),
        "cpu_end_s": round(sum(f["cpu_s"] for f in last) / len(last), 3),
    }


def rewrite(fleet: Path, cycle: int) -> None:
    """1% of the files changed, to a value of this cycle (so each is a change)."""
    for path in sorted(fleet.glob("*.json"))[::100]:
        declaration = json.loads(path.read_text())
        declaration["metadata"]["churned"] = str(cycle)
        path.write_text(json.dumps(declaration))


# (size, what, phase, limit): a phase's CPU seconds or peak RSS must stay under limit.
TARGETS: tuple[tuple[int, str, str, str, float], ...] = (
    (10_000, "files->consul", "steady", "cpu_s", 0.15),
    (50_000, "files->consul", "steady", "cpu_s", 0.5),
    (10_000, "files->sqlite", "steady", "cpu_s", 0.15),
    (50_000, "files->sqlite", "steady", "cpu_s", 0.5),
    (10_000, "files->redis", "steady", "cpu_s", 0.15),
    (50_000, "files->redis", "steady", "cpu_s", 0.5),
    (10_000, "files->postgres", "steady", "cpu_s", 0.15),
    (50_000, "files->postgres", "steady", "cpu_s", 0.5),
    (10_000, "consul->consul", "steady", "cpu_s", 0.15),
    (50_000, "consul->consul", "steady", "cpu_s", 0.5),
    (50_000, "files->consul", "churn", "cpu_s", 0.8),
    (50_000, "files->consul", "once", "cpu_s", 5.0),
    (50_000, "files->consul", "cold", "cpu_s", 8.0),
    (10_000, "files->consul", "churn", "peak_rss_mb", 100.0),
    (50_000, "files->consul", "churn", "peak_rss_mb", 250.0),
)


def targets(sizes: dict[int, dict[str, Run]]) -> list[tuple[str, Any, bool]]:
    """(what, figure, met) for every target whose size was run."""
    out: list[tuple[str, Any, bool]] = []
    for n, what, phase, figure, limit in TARGETS:
        if n in sizes:
            value = sizes[n][what][phase][figure]
            out.append((f"{n} {what} {phase} {figure} < {limit:g}", value, value < limit))
    for n, runs in sizes.items():
        cold = runs["files->consul"]["cold"]
        limit = math.ceil(n / 64) + 3
        out.append((f"{n} cold writes <= {limit}", cold["writes"], cold["writes"] <= limit))
    small, large = min(sizes), max(sizes)
    if large > small:
        for what in (
            "files->consul",
            "files->sqlite",
            "files->redis",
            "files->postgres",
            "consul->consul",
        ):
            ratio = (sizes[large][what]["steady"]["cpu_s"] / large) / max(
                sizes[small][what]["steady"]["cpu_s"] / small, 1e-12
            )
            out.append(
                (f"{what} steady per worker {large}/{small} <= 1.2", round(ratio, 2), ratio <= 1.2)
            )
    return out


def report(figures: dict[str, Any]) -> list[str]:
    sizes: dict[int, dict[str, Run]] = {int(n): runs for n, runs in figures["sizes"].items()}
    lines = [
        "scaling: CPU s and peak RSS MB per phase; per worker in us and KB",
        f"  {'workers':>8} {'path':15} {'phase':7} {'cpu s':>8} {'us/worker':>10}"
        f" {'rss MB':>8} {'KB/worker':>10} {'requests':>8} {'writes':>7}",
    ]
    for n, runs in sorted(sizes.items()):
        for what, phases in runs.items():
            for phase, s in phases.items():
                lines.append(
                    f"  {n:>8} {what:15} {phase:7} {s['cpu_s']:8.3f} {s['cpu_s'] / n * 1e6:10.1f}"
                    f" {s['peak_rss_mb']:8.1f} {s['peak_rss_mb'] * 1024 / n:10.2f}"
                    f" {s.get('requests', '-'):>8} {s.get('writes', '-'):>7}"
                )
    if "soak" in figures:
        k = figures["soak"]
        lines.append(
            f"  churn soak, {k['workers']} workers, {k['cycles']} cycles of 1% churn: RSS "
            f"{k['rss_start_mb']} -> {k['rss_end_mb']} MB (peak {k['peak_rss_mb']}), cycle CPU "
            f"{k['cpu_start_s']} -> {k['cpu_end_s']} s (mean of the first and last tenth)"
        )
    for name, value, met in targets(sizes):
        lines.append(f"  target {name:52} {value!s:>8} {'met' if met else 'MISSED'}")
    return lines
