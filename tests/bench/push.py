"""The push API's figures: a burst of REST registrations, register-to-visible latency at a
steady trickle, and the daemon's RSS growth with many open WebSocket connections.

Against a running daemon (a child process, the push source on SQLite, loopback without a
token) and the Consul double (64 ops a transaction), both on this machine.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from websockets.asyncio.client import connect
from websockets.sync.client import connect as connect_sync

from discovery.inbox import Registration, SqliteInbox
from tests.consul_target import ConsulTarget
from tests.daemon_process import Daemon, wait_until
from tests.doubles.consul import ConsulDouble


def _daemon(target: ConsulTarget, state: Path) -> Daemon:
    return Daemon(
        ["--owner", target.owner, "--source", f"push:{state / 'inbox.db'}", "--interval", "300s"],
        env=target.env(),
    ).started()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def burst(state: Path, workers: int, clients: int) -> dict[str, Any]:
    with ConsulDouble(max_txn_ops=64) as double:
        target = ConsulTarget(double.address, double, owner="bench")
        daemon = _daemon(target, state)
        try:
            daemon.wait_for(lambda line: "event=cycle" in line)
            double.reset_counts()
            url = f"http://{daemon.address}/workers/register"
            sessions = [requests.Session() for _ in range(clients)]

            def register(i: int) -> int:
                body = {"id": f"burst-{i:05}", "static_analysis_tools": [{"tool_name": "clippy"}]}
                return sessions[i % clients].post(url, json=body, timeout=30).status_code

            started = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                statuses = list(pool.map(register, range(workers)))
            acknowledged = time.perf_counter() - started
            wait_until(lambda: len(target.services()) == workers, 120, 0.05)
            visible = time.perf_counter() - started
            writes = double.count("PUT", "/v1/txn")
        finally:
            daemon.stop()
    limit = math.ceil(workers / 64) + 5
    return {
        "workers": workers,
        "clients": clients,
        "all_acknowledged_s": round(acknowledged, 3),
        "all_visible_s": round(visible, 3),
        "write_requests": writes,
        "write_requests_max": limit,
        "write_requests_met": writes <= limit,
        "non_200": sum(s != 200 for s in statuses),
    }


def trickle(state: Path, samples: int, gap: float) -> dict[str, Any]:
    """Registrations sent on a fixed schedule (one every ``gap`` seconds, whatever the
    cycles do), each timed from its send to the moment it is seen in Consul."""
    with ConsulDouble(max_txn_ops=64) as double:
        target = ConsulTarget(double.address, double, owner="bench")
        daemon = _daemon(target, state)
        sent: dict[str, float] = {}
        seen: dict[str, float] = {}
        try:
            daemon.wait_for(lambda line: "event=cycle" in line)
            url = f"http://{daemon.address}/workers/register"

            def send() -> None:
                start = time.perf_counter()
                for i in range(samples):
                    time.sleep(max(0.0, start + i * gap - time.perf_counter()))
                    sent[f"trickle-{i}"] = time.perf_counter()
                    requests.post(url, json={"id": f"trickle-{i}"}, timeout=10)

            with ThreadPoolExecutor(1) as pool:
                sending = pool.submit(send)
                while len(seen) < samples:
                    now = time.perf_counter()
                    for name in target.services().keys() - seen.keys():
                        seen[name] = now
                    time.sleep(0.005)
                sending.result()
        finally:
            daemon.stop()
    latencies = sorted(seen[name] - sent[name] for name in sent)
    p50 = statistics.median(latencies)
    return {
        "samples": samples,
        "gap_s": gap,
        "p50_s": round(p50, 3),
        "p95_s": round(latencies[math.ceil(0.95 * len(latencies)) - 1], 3),
        "p50_under_0_5s_met": p50 < 0.5,
    }


def websockets_rss(state: Path, connections: int) -> dict[str, Any]:
    with ConsulDouble(max_txn_ops=64) as double:
        target = ConsulTarget(double.address, double, owner="bench")
        daemon = _daemon(target, state)
        try:
            daemon.wait_for(lambda line: "event=cycle" in line)
            before = _rss_kb(daemon.proc.pid)
            opened = asyncio.run(
                _hold_open(
                    f"ws://{daemon.address}/workers/ws",
                    connections,
                    lambda: _rss_kb(daemon.proc.pid),
                )
            )
        finally:
            daemon.stop()
    return {
        "connections": opened["connections"],
        "rss_before_mb": round(before / 1024, 1),
        "rss_open_mb": round(opened["rss_kb"] / 1024, 1),
        "growth_mb": round((opened["rss_kb"] - before) / 1024, 1),
        "per_connection_kb": round((opened["rss_kb"] - before) / connections, 1),
    }


async def _hold_open(url: str, count: int, rss: Any) -> dict[str, Any]:
    sockets = []
    try:
        for _ in range(count):
            sockets.append(await connect(url, open_timeout=30))
        await asyncio.sleep(1)
        return {"connections": len(sockets), "rss_kb": rss()}
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


def run(workers: int, state: Path) -> dict[str, Any]:
    for part in ("burst", "trickle", "trickle_fast", "ws"):
        (state / part).mkdir()
    return {
        "burst": burst(state / "burst", workers, 50),
        # One registration every 1.2 s (slower than the 1 s debounce), and four a second
        # (faster: each waits for the debounce, half of it on average).
        "trickle": trickle(state / "trickle", 20, 1.2),
        "trickle_fast": trickle(state / "trickle_fast", 40, 0.25),
        "websockets": websockets_rss(state / "ws", workers),
    }


def inbox_soak(state: Path, expired: int, live: int = 500) -> dict[str, Any]:
    """The cycle time with ``live`` registrations, then after churn: real churn (REST
    registrations with a 1 s ttl, WebSocket connections that register and close, their
    grace 1 s) and, standing for a long soak's leftovers, ``expired`` expired rows written
    straight into the inbox (kept a day for purging, as the churn's are)."""
    inbox_path = state / "inbox.db"
    with ConsulDouble(max_txn_ops=64) as double:
        target = ConsulTarget(double.address, double, owner="bench")
        daemon = Daemon(
            ["--owner", target.owner, "--source", f"push:{inbox_path}", "--interval", "1s"],
            env=target.env(CAPSYNC_API__GRACE="1s"),
        ).started()
        try:
            daemon.wait_for(lambda line: "event=cycle" in line)
            base = f"http://{daemon.address}/workers/register"
            with requests.Session() as http:
                for i in range(live):
                    http.post(base, json={"id": f"live-{i:05}"}, timeout=30).raise_for_status()
                wait_until(lambda: len(target.services()) == live, 120, 0.05)
                start = _cycle_seconds(daemon, 5)
                for i in range(200):
                    http.post(
                        base, params={"ttl": 1}, json={"id": f"churn-{i:05}"}, timeout=30
                    ).raise_for_status()
            for i in range(50):
                with connect_sync(f"ws://{daemon.address}/workers/ws", open_timeout=10) as ws:
                    ws.send(json.dumps({"action": "Register", "capabilities": {"id": f"ws-{i}"}}))
                    ws.recv(timeout=10)
            _write_expired(inbox_path, expired)
            wait_until(lambda: len(target.services()) == live, 60, 0.1)
            end = _cycle_seconds(daemon, 5)
        finally:
            daemon.stop()
    held, alive = _rows(inbox_path)
    return {
        "rows_held": held,
        "rows_live": alive,
        "cycle_start_s": start,
        "cycle_end_s": end,
    }


def _cycle_seconds(daemon: Daemon, cycles: int) -> float:
    """The median time of the next ``cycles`` cycles, from their log lines."""
    seen = len(daemon.lines)
    wait_until(
        lambda: sum("event=cycle " in line for line in daemon.lines[seen:]) >= cycles, 60, 0.1
    )
    times = [
        float(line.split(" seconds=")[1].split()[0])
        for line in daemon.lines[seen:]
        if "event=cycle " in line
    ]
    return round(statistics.median(times[:cycles]), 3)


def _write_expired(path: Path, count: int) -> None:
    inbox = SqliteInbox(path)
    try:
        at = time.time() - 60
        for start in range(0, count, 1000):
            inbox.put(
                [
                    Registration(f"expired-{i:06}", {"id": f"expired-{i:06}"}, "rest", at)
                    for i in range(start, min(count, start + 1000))
                ]
            )
    finally:
        inbox.close()


def _rows(path: Path) -> tuple[int, int]:
    inbox = SqliteInbox(path)
    try:
        now = time.time()
        rows = inbox.all()
        return len(rows), sum(r.live(now) for r in rows)
    finally:
        inbox.close()
