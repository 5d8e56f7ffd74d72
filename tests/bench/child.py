"""Measured cycles in a child process: ``python -m tests.bench.child APPROACH DIR ADDR``.

APPROACH is capsync or naive against Consul (ADDR host:port), or capsync-store or
naive-store against Redis or PostgreSQL (ADDR a redis:// or postgresql:// URL).

For each line ``cycle`` on stdin it runs one cycle and prints one JSON line: the wall and
CPU seconds of that cycle alone (imports and start-up excluded) and the process's peak
RSS so far. One process runs all of an approach's cycles, as the daemon does (capsync
keeps what it learnt between cycles); a child, so that its memory and CPU are its own
and the Consul double's work (in the parent) is never counted here.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import resource
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from daemon import logs
from daemon.cycle import Handover, Syncer
from daemon.report import log_problems, summary
from daemon.settings_model import SETTINGS
from daemon.wiring import build_normaliser, build_registries, build_sources

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import consul


def capsync(directory: Path, address: str) -> Callable[[], str]:
    """The daemon's cycle over a directory of files, into Consul."""
    return syncing({"consul": {"address": address}}, files(directory))


def capsync_txn128(directory: Path, address: str) -> Callable[[], str]:
    """The same, into a Consul of 1.14 or later (transactions of up to 128 operations,
    ``[consul] max_txn_ops = 128``): an entry is two operations, its service and its
    capsync health check."""
    return syncing({"consul": {"address": address, "max_txn_ops": 128}}, files(directory))


def capsync_consul(service: Path, address: str) -> Callable[[], str]:
    """The daemon's cycle over a non-file source: services others registered in Consul."""
    return syncing({"consul": {"address": address}}, {"type": "consul", "services": [str(service)]})


def capsync_store(directory: Path, url: str) -> Callable[[], str]:
    backend = "redis" if url.startswith("redis") else "postgres"
    return syncing({"registry": {"backend": backend, "url": url}}, files(directory))


def capsync_sqlite(directory: Path, path: str) -> Callable[[], str]:
    """The daemon's cycle over a directory of files, into a SQLite file at ``path``."""
    return syncing({"registry": {"backend": "sqlite", "path": path}}, files(directory))


def files(directory: Path) -> dict[str, Any]:
    return {"type": "file", "path": str(directory)}


def syncing(settings_: dict[str, Any], source: dict[str, Any]) -> Callable[[], str]:
    """One Syncer (and registry connection) for every cycle, as in the daemon."""
    registry = {"owner": "bench", "allow_mass_delete": True, **settings_.pop("registry", {})}
    if "consul" in settings_:
        # The double is Python on a shared machine: at 100,000 services its answer to
        # a full read takes longer than Consul's own would, and longer than the default.
        settings_["consul"] = {"timeout": 120.0, **settings_["consul"]}
    if registry.get("backend") in ("redis", "postgres"):
        # The same for the stores' 10 s per statement: at 100,000 rows on a loaded
        # machine, one 500-row PostgreSQL batch ran past it (statement timeout: the batch
        # is refused and the next cycle writes it; the figure would be a failed cycle).
        registry = {"timeout": 120.0, **registry}
    settings = SETTINGS.model_validate(
        {
            "registry": registry,
            **settings_,
            "sources": [source],
            "daemon": {"validations": state_file("validations.cache")},
        }
    )
    # The validations on disk as the daemon keeps them, in the bench's state directory.
    normaliser = build_normaliser(settings)
    handover = Handover(normaliser=normaliser)
    sources = build_sources(settings, normaliser.validations)
    syncer = Syncer(sources, build_registries(settings), handover=handover)
    atexit.register(syncer.close)  # as the daemon, when it stops

    def cycle() -> str:
        report = syncer.run_once()
        if not report.ok:
            log_problems(report)  # why, on stderr: a refused batch's reason, say
            raise SystemExit(f"capsync cycle failed: {summary(report)}")
        return summary(report)

    return cycle


def state_file(name: str) -> str:
    """A file in ``$STATE_DIRECTORY``, as the daemon's default; "off" without one."""
    directory = os.environ.get("STATE_DIRECTORY")
    return str(Path(directory, name)) if directory else "off"


def naive(directory: Path, address: str) -> Callable[[], str]:
    host, port = address.rsplit(":", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client = consul.Consul(host=host, port=int(port))
    return lambda: naive_cycle(directory, client)


def naive_cycle(directory: Path, client: consul.Consul) -> str:
    """What a user would write from the seed's Consul example: register every worker on
    every cycle through the agent, tags = all tools, meta = metadata, no diff."""
    count = 0
    for caps, tools in declarations(directory):
        client.agent.service.register(
            "worker", service_id=caps["id"], tags=sorted(set(tools)), meta=caps.get("metadata")
        )
        count += 1
    return f"registered {count}"


def declarations(directory: Path) -> Iterator[tuple[dict[str, Any], list[str]]]:
    """Each declaration file with its tools (names and alternatives), as the seed's
    all_tools() gives them."""
    for path in sorted(directory.glob("*.json")):
        caps = json.loads(path.read_text())
        tools = [
            name
            for key, tools_ in caps.items()
            if key.endswith("_tools")
            for tool in tools_
            for name in (tool["tool_name"], *tool["alternatives"])
        ]
        yield caps, tools


def naive_store(directory: Path, url: str) -> Callable[[], str]:
    """The seed's store_capabilities (Redis) or save_capabilities (PostgreSQL), for
    every worker on every cycle."""
    if url.startswith("redis"):
        import redis  # noqa: PLC0415

        client = redis.Redis.from_url(url, protocol=2, driver_info=None)

        def redis_cycle() -> str:
            count = 0
            for caps, tools in declarations(directory):
                client.set(caps["id"], json.dumps(caps))
                for tool in tools:
                    client.sadd(f"tool:{tool}", caps["id"])
                count += 1
            return f"stored {count}"

        return redis_cycle
    import psycopg  # noqa: PLC0415
    from psycopg.types.json import Jsonb  # noqa: PLC0415

    conn = psycopg.connect(url, autocommit=True)
    conn.execute(SEED_TABLE)
    columns = [*TOOL_FIELDS, "flags", "metadata"]

    def postgres_cycle() -> str:
        count = 0
        for caps, _ in declarations(directory):
            conn.execute(SEED_UPSERT, [caps["id"], *(Jsonb(caps.get(c)) for c in columns)])
            count += 1
        return f"saved {count}"

    return postgres_cycle


TOOL_FIELDS = (
    "static_analysis_tools",
    "security_scanning_tools",
    "dynamic_analysis_tools",
    "fuzzing_tools",
    "test_framework_tools",
)
SEED_TABLE = """CREATE TABLE IF NOT EXISTS worker_capabilities (
    id VARCHAR(255) PRIMARY KEY, static_analysis_tools JSONB, security_scanning_tools JSONB,
    dynamic_analysis_tools JSONB, fuzzing_tools JSONB, test_framework_tools JSONB,
    flags JSONB, metadata JSONB,
    created_at TIMESTAMP DEFAULT NOW(), updated_at TIMESTAMP DEFAULT NOW())"""
SEED_UPSERT = """INSERT INTO worker_capabilities (id, static_analysis_tools,
    security_scanning_tools, dynamic_analysis_tools, fuzzing_tools, test_framework_tools,
    flags, metadata) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (id) DO UPDATE SET static_analysis_tools = EXCLUDED.static_analysis_tools,
    security_scanning_tools = EXCLUDED.security_scanning_tools,
    dynamic_analysis_tools = EXCLUDED.dynamic_analysis_tools,
    fuzzing_tools = EXCLUDED.fuzzing_tools, test_framework_tools = EXCLUDED.test_framework_tools,
    flags = EXCLUDED.flags, metadata = EXCLUDED.metadata, updated_at = NOW()"""

APPROACHES: dict[str, Callable[[Path, str], Callable[[], str]]] = {
    "capsync": capsync,
    "capsync-txn128": capsync_txn128,
    "capsync-consul": capsync_consul,
    "naive": naive,
    "capsync-store": capsync_store,
    "capsync-sqlite": capsync_sqlite,
    "naive-store": naive_store,
}


def main() -> None:
    logs.configure(level=logging.WARNING)  # what went wrong, on stderr, as the daemon logs it
    approach, directory, address = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    cycle = APPROACHES[approach](directory, address)
    for command in sys.stdin:
        if command.strip() != "cycle":
            break
        wall, cpu = time.perf_counter(), time.process_time()
        outcome = cycle()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        figures = {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak_rss_mb(), "outcome": outcome}
        print(json.dumps({**figures, "rss_mb": current_rss_mb()}), flush=True)


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not getrusage's ru_maxrss: Linux carries
    that over an exec from the process that forked it, so a child of a large parent (the
    bench, holding the Consul double) would report the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """The resident set now (not its peak): what a long run's flatness is judged by."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


if __name__ == "__main__":
    main()
