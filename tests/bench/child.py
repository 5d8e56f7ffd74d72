"""Measured cycles in a child process: ``python -m tests.bench.child APPROACH DIR ADDR``.

For each line ``cycle`` on stdin it runs one cycle and prints one JSON line: the wall and
CPU seconds of that cycle alone (imports and start-up excluded) and the process's peak
RSS so far. One process runs all of an approach's cycles, as the daemon does (capsync
keeps what it learnt between cycles); a child, so that its memory and CPU are its own
and the Consul double's work (in the parent) is never counted here.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.cycle import Syncer
from daemon.report import summary
from daemon.settings_model import SETTINGS
from daemon.wiring import build_registries, build_sources

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import consul


def capsync(directory: Path, address: str) -> Callable[[], str]:
    """The daemon's cycle over a directory of files."""
    return syncing(address, {"type": "file", "path": str(directory)})


def capsync_consul(service: Path, address: str) -> Callable[[], str]:
    """The daemon's cycle over a non-file source: services others registered in Consul."""
    return syncing(address, {"type": "consul", "services": [str(service)]})


def syncing(address: str, source: dict[str, Any]) -> Callable[[], str]:
    """One Syncer (and registry connection) for every cycle, as in the daemon."""
    settings = SETTINGS.model_validate({
        "registry": {"owner": "bench", "allow_mass_delete": True},
        "consul": {"address": address},
        "sources": [source],
    })
    syncer = Syncer(build_sources(settings), build_registries(settings))

    def cycle() -> str:
        report = syncer.run_once()
        if not report.ok:
            raise SystemExit(f"capsync cycle failed: {summary(report)}")
        return summary(report)

    return cycle


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
    for path in sorted(directory.glob("*.json")):
        caps = json.loads(path.read_text())
        tools = {
            name
            for key, tools_ in caps.items() if key.endswith("_tools")
            for tool in tools_
            for name in (tool["tool_name"], *tool.get("alternatives", []))
        }
        client.agent.service.register(
            "worker", service_id=caps["id"], tags=sorted(tools), meta=caps.get("metadata"))
        count += 1
    return f"registered {count}"


def main() -> None:
    approach, directory, address = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    approaches = {"capsync": capsync, "capsync-consul": capsync_consul, "naive": naive}
    cycle = approaches[approach](directory, address)
    for command in sys.stdin:
        if command.strip() != "cycle":
            break
        wall, cpu = time.perf_counter(), time.process_time()
        outcome = cycle()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": rss_mb,
                          "outcome": outcome}), flush=True)


if __name__ == "__main__":
    main()
