"""The push API's figures: a burst of REST registrations, register-to-visible latency at a
steady trickle, and the daemon's RSS growth with many open WebSocket connections.

Against a running daemon (a child process, the push source on SQLite, loopback without a
token) and the Consul double (64 ops a transaction), both on this machine.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from websockets.asyncio.client import connect

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
