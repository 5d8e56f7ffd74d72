"""The Redis and PostgreSQL runs of the bench: capsync against the seed's naive loops.

Both approaches talk to private servers (tests/services.py) through the counting proxy
(tests/proxy.py), so round trips are counted on the wire, set-up included; the proxy's
own latency is in both approaches' times alike.
- Redis naive (the seed's store_capabilities): SET the JSON plus one SADD per tool, per
  worker, every cycle; no diff, and nothing ever leaves a tool set.
- PostgreSQL naive (the seed's save_capabilities): one INSERT ... ON CONFLICT per worker,
  every cycle.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.proxy import Proxy
from tests.services import RedisServer, free_port, running_postgres

# reread: the first cycle after the cold one (the store is read in full: it was written);
# steady: nothing changed since (the store's version stands still).
PHASES = ("cold", "reread", "steady", "churn")


@contextmanager
def redis_url() -> Iterator[tuple[int, str]]:
    with tempfile.TemporaryDirectory(prefix="capsync-bench-redis-") as directory:
        server = RedisServer(free_port(), Path(directory))
        server.start()
        try:
            yield server.port, "redis://127.0.0.1:{port}/0"
        finally:
            server.stop()


@contextmanager
def postgres_url() -> Iterator[tuple[int, str]]:
    with running_postgres() as server:
        yield server.port, "postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable"


STORES: dict[str, Callable[[], Any]] = {"redis": redis_url, "postgres": postgres_url}


def run(
    fleet: Path, child: Callable[..., Any], churn: Callable[[], int], rewrite: Callable[[], None]
) -> dict[str, Any]:
    """Each store: capsync's three phases, then (on a fresh fleet and server) the naive
    loop's, with ratios capsync/naive per phase for round trips and times."""
    out: dict[str, Any] = {}
    for store, server in STORES.items():
        figures: dict[str, Any] = {}
        for approach in ("capsync", "naive"):
            rewrite()
            with server() as (port, url):
                proxy = Proxy(port)
                process = child(f"{approach}-store", fleet, url.format(port=proxy.port))
                figures[approach] = {}
                for phase in PHASES:
                    if phase == "churn":
                        churn()
                    before = proxy.round_trips
                    result = process.cycle()
                    result["round_trips"] = proxy.round_trips - before
                    figures[approach][phase] = result
                process.close()
                proxy.close()
        figures["ratios"] = {
            f"{phase}_{what}": round(
                figures["capsync"][phase][what] / max(figures["naive"][phase][what], 1e-9), 4
            )
            for phase in PHASES
            for what in ("round_trips", "wall_s", "cpu_s")
        }
        out[store] = figures
    return out
