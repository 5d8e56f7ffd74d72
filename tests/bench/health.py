"""The write cost of health: N containers flipping at once (a health storm), and each of
them flapping F times within the damping time, against a writer that makes one write per
flap (a check registered on every probe result, as an agent-less script would).

Counted on the Consul double: HTTP write requests and check operations. capsync runs
in-process (a Syncer with the Consul registry), as the daemon's cycle does.
"""

from __future__ import annotations

import time
from typing import Any

import requests

from daemon.cycle import Syncer
from daemon.registry.consul import ConsulRegistry
from daemon.registry.ownership import Ownership
from daemon.registry_sync import RegistrySync, SyncOptions
from discovery.consul.client import ConsulClient, ConsulEndpoint
from discovery.health import PASSING, Health
from tests.doubles.consul import ConsulDouble
from tests.scripted_source import ScriptedSource

CRITICAL = Health("critical", "docker: unhealthy (3 failed probes)")
DAMPING = 10.0


def run(containers: int = 100, flaps: int = 10) -> dict[str, Any]:
    return {
        "containers": containers,
        "flaps": flaps,
        "capsync": _capsync(containers, flaps),
        "one_write_per_flap": _per_flap(containers, flaps),
    }


def _capsync(containers: int, flaps: int) -> dict[str, Any]:
    clock = [1_000_000.0]
    source = ScriptedSource(
        declarations=[{"id": f"c-{i:04}"} for i in range(containers)], as_text=True
    )
    with ConsulDouble(max_txn_ops=64) as double:
        registry = ConsulRegistry(
            ConsulClient(ConsulEndpoint(double.address)),
            Ownership(service="worker", owner="bench", node="capsync-bench"),
        )
        options = SyncOptions(service="worker", owner="bench")
        syncer = Syncer(
            [source], [RegistrySync("consul", registry, options)], clock=lambda: clock[0]
        )
        syncer.damper.min_seconds = DAMPING
        syncer.run_once()
        double.reset_counts()
        clock[0] += DAMPING
        source.health = {f"c-{i:04}": CRITICAL for i in range(containers)}
        started = time.perf_counter()
        syncer.run_once()
        storm = {
            "write_requests": double.count("PUT"),
            "seconds": round(time.perf_counter() - started, 3),
        }
        double.reset_counts()
        for flap in range(flaps):  # every container flaps back and forth within DAMPING
            clock[0] += DAMPING / (flaps + 1)
            healthy = flap % 2 == 0
            source.health = {
                f"c-{i:04}": PASSING if healthy else CRITICAL for i in range(containers)
            }
            syncer.run_once()
        flapping = {"write_requests": double.count("PUT")}
        registry.close()
    return {"storm": storm, "flapping": flapping}


def _per_flap(containers: int, flaps: int) -> dict[str, Any]:
    """One catalogue write per container per health change, no batching, no damping."""
    with ConsulDouble() as double, requests.Session() as session:
        for i in range(containers):
            body = {
                "Node": "naive",
                "Address": "127.0.0.1",
                "Service": {"ID": f"c-{i:04}", "Service": "worker"},
            }
            session.put(f"{double.url}/v1/catalog/register", json=body, timeout=10)
        double.reset_counts()

        def flip(status: str) -> None:
            for i in range(containers):
                check = {"CheckID": f"c-{i:04}", "Name": "probe", "Status": status}
                body = {"Node": "naive", "SkipNodeUpdate": True, "Check": check}
                session.put(f"{double.url}/v1/catalog/register", json=body, timeout=10)

        started = time.perf_counter()
        flip("critical")
        storm = {
            "write_requests": double.count("PUT"),
            "seconds": round(time.perf_counter() - started, 3),
        }
        double.reset_counts()
        for flap in range(flaps):
            flip("passing" if flap % 2 == 0 else "critical")
        flapping = {"write_requests": double.count("PUT")}
    return {"storm": storm, "flapping": flapping}


def summary(figures: dict[str, Any]) -> str:
    ours, naive = figures["capsync"], figures["one_write_per_flap"]
    return (
        f"health storm ({figures['containers']} containers flipping at once): capsync "
        f"{ours['storm']['write_requests']} write requests, one write per flap "
        f"{naive['storm']['write_requests']}; {figures['flaps']} flaps each within "
        f"{DAMPING:g}s (damped): capsync {ours['flapping']['write_requests']}, one write "
        f"per flap {naive['flapping']['write_requests']}"
    )
