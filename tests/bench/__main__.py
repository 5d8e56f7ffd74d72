"""`python -m tests.bench [--workers N] [--events N] [--push N] [--amqp N]`: capsync vs the
naive approach; `python -m tests.bench --sizes 10000,50000,100000`: the scaling run
(tests/bench/scaling.py); `python -m tests.bench --inbox-soak N`: the push source's cycle
time before and after churn leaves N expired rows in its inbox (tests/bench/push.py).

Scenarios run side by side in one invocation, so ratios are fair on a noisy machine:
- capsync: cold sync of N file declarations into a fresh Consul double, a steady cycle
  with nothing changed, a cycle after 1% churn;
- naive (the seed's Consul example): python-consul2 agent.service.register for every
  worker on every cycle, no diff; cold and steady;
- capsync with a non-file source: the consul source reading N services that others
  registered (meta ``worker-capabilities``), cold and steady (fingerprints reused);
- event latency on a private Docker engine: container started -> entry visible, with the
  daemon's interval at 300 s;
- the push API (tests/bench/push.py): N workers registering over REST with 50 clients,
  register-to-visible latency at a steady trickle, RSS with N open WebSocket connections;
- RabbitMQ (tests/bench/amqp.py): N declarations through the queue into Consul, and the
  change events published per second with confirms;
- Redis and PostgreSQL (tests/bench/stores.py): capsync's cold, steady and 1% churn
  cycles against the seed's naive loops, round trips counted on the wire.
- the gRPC API (tests/bench/grpc_api.py): unary Register throughput with 20 clients, Watch
  delivery latency from the apply to the client;
- the kubernetes source's steady cycle at 10,000 pods, before and after its cache
  (tests/bench/kubernetes.py);
- the write cost of health (tests/bench/health.py): 100 containers flipping at once, and
  flapping within the damping time, against one write per flap.
Each cycle runs in a fresh child process (tests/bench/child.py) that reports its own wall
and CPU seconds and peak RSS; HTTP requests are counted by the double, in this process.
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from tests.bench import amqp, grpc_api, health, kubernetes, push, scaling, stores
from tests.conftest import ROOT
from tests.doubles.consul import ConsulDouble

TOOLS = {
    "static_analysis_tools": ["clippy", "rustfmt", "ruff", "mypy", "eslint", "go-vet"],
    "security_scanning_tools": ["cargo-audit", "semgrep", "bandit", "trivy", "gosec"],
    "fuzzing_tools": ["afl++", "libfuzzer", "honggfuzz", "cargo-fuzz"],
    "test_framework_tools": ["pytest", "jest", "go-test", "cargo-test"],
}


def write_fleet(directory: Path, count: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    for i in range(count):
        declaration: dict[str, Any] = {"id": f"worker-{i:05}"}
        for field, names in TOOLS.items():
            chosen = rng.sample(names, rng.randint(0, 3))
            declaration[field] = [
                {
                    "tool_name": n,
                    "required": rng.random() < 0.3,
                    "alternatives": [f"{n}-alt"] if rng.random() < 0.2 else [],
                }
                for n in chosen
            ]
        declaration["flags"] = {"llm_support": rng.random() < 0.5, "gpu": rng.random() < 0.1}
        declaration["metadata"] = {"pool": f"pool-{i % 20}", "platform": "linux"}
        (directory / f"worker-{i:05}.json").write_text(json.dumps(declaration))


def seed_consul(double: ConsulDouble, count: int, seed: int = 7) -> None:
    """N instances of service ``legacy`` that declare capabilities in their meta, as
    others would register them (10 nodes, written through /v1/txn)."""
    rng = random.Random(seed)
    url = f"http://{double.address}"
    ops = []
    for i in range(count):
        node = f"legacy-{i % 10}"
        if i < 10:
            requests.put(
                f"{url}/v1/catalog/register",
                json={"Node": node, "Address": f"10.0.0.{i + 1}"},
                timeout=10,
            ).raise_for_status()
        declaration: dict[str, Any] = {"id": f"legacy-{i:05}"}
        for field, names in TOOLS.items():
            declaration[field] = [{"tool_name": n} for n in rng.sample(names, rng.randint(0, 2))]
        meta = {"worker-capabilities": json.dumps(declaration, separators=(",", ":"))}
        ops.append(
            {
                "Service": {
                    "Verb": "set",
                    "Node": node,
                    "Service": {"ID": f"legacy-{i:05}", "Service": "legacy", "Meta": meta},
                }
            }
        )
    for start in range(0, len(ops), 64):
        requests.put(f"{url}/v1/txn", json=ops[start : start + 64], timeout=30).raise_for_status()


def churn(directory: Path, fraction: float) -> int:
    files = sorted(directory.glob("*.json"))
    changed = files[:: max(1, int(1 / fraction))]
    for path in changed:
        declaration = json.loads(path.read_text())
        declaration["metadata"]["churned"] = "yes"
        path.write_text(json.dumps(declaration))
    return len(changed)


class Child:
    """An approach's process; each ``cycle()`` is one measured cycle in it."""

    def __init__(
        self,
        approach: str,
        directory: Path | str,
        address: str,
        double: ConsulDouble | None = None,
        *,
        state: Path | None = None,
    ) -> None:
        """``state``: the process's $STATE_DIRECTORY (None: it keeps nothing on disk)."""
        self.double = double
        env = {k: v for k, v in os.environ.items() if k != "STATE_DIRECTORY"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.child", approach, str(directory), address],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env if state is None else {**env, "STATE_DIRECTORY": str(state)},
        )

    def cycle(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if self.double is not None:
            self.double.reset_counts()
        self.proc.stdin.write("cycle\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"cycle failed (exit {self.proc.wait()})")
        return measured(json.loads(line), self.double)

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait()
        self.proc.stdout.close()


def measured(figures: dict[str, Any], double: ConsulDouble | None) -> dict[str, Any]:
    out = {
        "wall_s": round(figures["wall_s"], 3),
        "cpu_s": round(figures["cpu_s"], 3),
        "peak_rss_mb": round(figures["peak_rss_mb"], 1),
        "rss_mb": round(figures.get("rss_mb", 0.0), 1),
        "outcome": figures["outcome"],
    }
    if double is not None:
        by_method = {m: double.count(m) for m in ("GET", "PUT", "DELETE") if double.count(m)}
        out.update(
            requests=sum(by_method.values()),
            writes=by_method.get("PUT", 0) + by_method.get("DELETE", 0),
            by_method=by_method,
        )
    return out


def event_latency(samples: int) -> dict[str, Any]:
    from tests.consul_target import ConsulTarget  # noqa: PLC0415 - only with Docker
    from tests.daemon_process import Daemon, wait_until  # noqa: PLC0415
    from tests.docker_engine import running_engine  # noqa: PLC0415

    latencies = []
    with running_engine() as engine, ConsulDouble() as double:
        target = ConsulTarget(double.address, double, owner="bench")
        daemon = Daemon(
            ["--owner", "bench", "--source", "docker", "--interval", "300s"],
            env=target.env(DOCKER_HOST=engine.host),
        ).started()
        try:
            daemon.wait_for(lambda line: "event=cycle" in line)
            with engine.client() as client:
                for i in range(samples):
                    name = f"latency-{i}"
                    client.containers.run(
                        "capsync-test/busybox:1",
                        name=name,
                        detach=True,
                        labels={"worker.capabilities": json.dumps({"id": name})},
                    )
                    started = time.perf_counter()
                    wait_until(lambda n=name: n in target.services(), 30, 0.01)
                    latencies.append(time.perf_counter() - started)
                    time.sleep(0.3)
        finally:
            daemon.stop()
    latencies.sort()
    return {
        "p50": round(statistics.median(latencies), 3),
        "p95": round(latencies[math.ceil(0.95 * len(latencies)) - 1], 3),
        "samples": len(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--workers", type=int, default=10_000)
    parser.add_argument(
        "--events", type=int, default=20, help="containers for the event-latency figure; 0 skips it"
    )
    parser.add_argument(
        "--push", type=int, default=1000, help="workers for the push API figures; 0 skips them"
    )
    parser.add_argument(
        "--grpc", type=int, default=2000, help="registrations for the gRPC figures; 0 skips them"
    )
    parser.add_argument("--only-grpc", action="store_true", help="only the gRPC figures")
    parser.add_argument("--only-push", action="store_true", help="only the push API figures")
    parser.add_argument(
        "--amqp",
        type=int,
        default=10_000,
        help="declarations and events for the RabbitMQ figures; 0 skips them",
    )
    parser.add_argument("--only-amqp", action="store_true", help="only the RabbitMQ figures")
    parser.add_argument(
        "--only-health", action="store_true", help="only the health storm's write cost"
    )
    parser.add_argument(
        "--no-stores", action="store_true", help="skip the Redis and PostgreSQL runs"
    )
    parser.add_argument(
        "--pods",
        type=int,
        default=10_000,
        help="pods for the Kubernetes steady-cycle figure; 0 skips it",
    )
    parser.add_argument(
        "--sizes",
        help="only the scaling run, at these worker counts (comma-separated, e.g. "
        "10000,50000,100000): per-worker CPU and memory of every phase, and the targets",
    )
    parser.add_argument(
        "--soak",
        type=int,
        default=100,
        help="cycles of the churn soak in the scaling run (at its smallest size); 0 skips it",
    )
    parser.add_argument(
        "--inbox-soak",
        type=int,
        default=0,
        help="only the inbox churn soak: the cycle time before and after N expired rows",
    )
    args = parser.parse_args()
    if args.inbox_soak:
        report_inbox_soak(args.inbox_soak)
        return
    if args.only_health:
        figures = {"health": health.run()}
        print(health.summary(figures["health"]))
        print(json.dumps(figures))
        return
    if args.sizes:
        report_scaling([int(n) for n in args.sizes.split(",")], args.soak)
        return
    if args.only_push:
        report_push(args.push)
        return
    if args.only_amqp:
        figures = {"amqp": amqp.run(args.amqp)}
        print("\n".join(amqp.summary(figures["amqp"])))
        print(json.dumps(figures))
        return
    if args.only_grpc:
        with tempfile.TemporaryDirectory(prefix="capsync-bench-grpc-") as tmp:
            figures = {"grpc": grpc_api.run(args.grpc, Path(tmp))}
        grpc_api.report(figures["grpc"])
        print(json.dumps(figures))
        return
    n = args.workers
    results: dict[str, Any] = {"workers": n, "capsync": {}, "naive": {}}
    with (
        tempfile.TemporaryDirectory(prefix="capsync-bench-") as tmp,
        tempfile.TemporaryDirectory(prefix="capsync-bench-state-") as state,
    ):
        fleet = Path(tmp)
        write_fleet(fleet, n)
        with ConsulDouble(max_txn_ops=64) as double:
            daemon = Child("capsync", fleet, double.address, double, state=Path(state))
            results["capsync"]["cold"] = daemon.cycle()
            results["capsync"]["steady"] = daemon.cycle()
            results["churned"] = churn(fleet, 0.01)
            results["capsync"]["churn"] = daemon.cycle()
            daemon.close()
            # `capsync run --once`: only what the daemon left in the state directory
            once = Child("capsync", fleet, double.address, double, state=Path(state))
            results["capsync"]["steady_fresh_process"] = once.cycle()
            once.close()
        with ConsulDouble(max_txn_ops=64) as double:
            seed_consul(double, n)
            source = Child("capsync-consul", "legacy", double.address, double)
            results["consul_source"] = {"cold": source.cycle(), "steady": source.cycle()}
            source.close()
        write_fleet(fleet, n)
        with ConsulDouble(max_txn_ops=64) as double:
            naive = Child("naive", fleet, double.address, double)
            results["naive"]["cold"] = naive.cycle()
            results["naive"]["steady"] = naive.cycle()
            naive.close()
        if not args.no_stores:
            results["stores"] = stores.run(
                fleet, Child, lambda: churn(fleet, 0.01), lambda: write_fleet(fleet, n)
            )
    results["health"] = health.run()
    results["ratios"] = {
        f"{phase}_{what}": round(
            results["capsync"][phase][what] / max(results["naive"][phase][what], 1e-9), 4
        )
        for phase in ("cold", "steady")
        for what in ("requests", "wall_s", "cpu_s")
    }
    results["peak_rss_mb"] = max(s["peak_rss_mb"] for s in results["capsync"].values())
    results["targets"] = {
        # Two ops an entry (its service and its health check), one kept for the node's.
        "cold_write_requests_max": math.ceil(n / 31) + 3,
        "cold_write_requests_met": results["capsync"]["cold"]["writes"] <= math.ceil(n / 31) + 3,
        "steady_zero_writes_met": results["capsync"]["steady"]["writes"] == 0,
        "steady_requests_max_3_met": results["capsync"]["steady"]["requests"] <= 3,
        "steady_cpu_under_1s_met": results["capsync"]["steady"]["cpu_s"] < 1.0,
        "peak_rss_under_150mb_met": results["peak_rss_mb"] < 150,
        "consul_source_steady_cpu_under_0_5s_met": results["consul_source"]["steady"]["cpu_s"]
        < 0.5,
    }
    if args.events:
        results["event_latency_s"] = event_latency(args.events)
        results["targets"]["event_p50_under_1_5s_met"] = results["event_latency_s"]["p50"] < 1.5
    if args.push:
        with tempfile.TemporaryDirectory(prefix="capsync-bench-push-") as tmp:
            results["push"] = push.run(args.push, Path(tmp))
    if args.amqp:
        results["amqp"] = amqp.run(args.amqp)
    if args.grpc:
        with tempfile.TemporaryDirectory(prefix="capsync-bench-grpc-") as tmp:
            results["grpc"] = grpc_api.run(args.grpc, Path(tmp))
    if args.pods:
        results["kubernetes_steady"] = kubernetes.steady_cycle(args.pods)
    print_summary(results)
    print(json.dumps(results))


def report_scaling(sizes: list[int], soak: int) -> None:
    figures: dict[str, Any] = {
        "sizes": {n: scaling.run_size(n, Child, write_fleet, seed_consul, churn) for n in sizes}
    }
    if soak:
        figures["soak"] = scaling.soak(min(sizes), soak, Child, write_fleet)
    print("\n".join(scaling.report(figures)))
    print(json.dumps(figures))


def report_push(workers: int) -> None:
    with tempfile.TemporaryDirectory(prefix="capsync-bench-push-") as tmp:
        results = {"push": push.run(workers, Path(tmp))}
    print_push(results["push"])
    print(json.dumps(results))


def report_inbox_soak(expired: int) -> None:
    with tempfile.TemporaryDirectory(prefix="capsync-bench-inbox-") as tmp:
        figures = push.inbox_soak(Path(tmp), expired)
    print(
        f"  inbox soak: {figures['rows_held']} rows held, {figures['rows_live']} live; "
        f"median cycle {figures['cycle_start_s']}s at the start, "
        f"{figures['cycle_end_s']}s at the end"
    )
    print(json.dumps({"inbox_soak": figures}))


def print_push(figures: dict[str, Any]) -> None:
    b, w = figures["burst"], figures["websockets"]
    print(
        f"  push burst: {b['workers']} workers, {b['clients']} clients: all acknowledged "
        f"{b['all_acknowledged_s']}s, all visible in Consul {b['all_visible_s']}s, "
        f"{b['write_requests']} write requests (max {b['write_requests_max']})"
    )
    for t in (figures["trickle"], figures["trickle_fast"]):
        print(
            f"  push trickle, one every {t['gap_s']}s: register -> visible p50 {t['p50_s']}s "
            f"p95 {t['p95_s']}s over {t['samples']} registrations"
        )
    print(
        f"  websockets: {w['connections']} open: RSS {w['rss_before_mb']} -> "
        f"{w['rss_open_mb']} MB (+{w['growth_mb']} MB, {w['per_connection_kb']} KB each)"
    )


def print_summary(results: dict[str, Any]) -> None:
    print(f"capsync vs naive, {results['workers']} workers (Consul double, this machine)")
    for approach in ("capsync", "naive"):
        for phase, s in results[approach].items():
            print(
                f"  {approach:8} {phase:7} wall {s['wall_s']:7.3f}s  cpu {s['cpu_s']:7.3f}s"
                f"  requests {s['requests']:6}  writes {s['writes']:6}"
                f"  rss {s['peak_rss_mb']:6.1f} MB  ({s['outcome']})"
            )
    for phase, s in results["consul_source"].items():
        print(
            f"  consul-source {phase:7} wall {s['wall_s']:7.3f}s  cpu {s['cpu_s']:7.3f}s"
            f"  requests {s['requests']:6}  writes {s['writes']:6}"
            f"  rss {s['peak_rss_mb']:6.1f} MB  ({s['outcome']})"
        )
    steady = results["capsync"]["steady"]["cpu_s"]
    print(
        f"  steady cycle cpu: files {steady:.3f}s  consul source "
        f"{results['consul_source']['steady']['cpu_s']:.3f}s"
    )
    for name, value in results["ratios"].items():
        print(f"  ratio capsync/naive {name:16} {value}")
    for store, figures in results.get("stores", {}).items():
        for approach in ("capsync", "naive"):
            for phase, s in figures[approach].items():
                print(
                    f"  {store:8} {approach:8} {phase:7} wall {s['wall_s']:7.3f}s  cpu "
                    f"{s['cpu_s']:7.3f}s  round trips {s['round_trips']:6}  ({s['outcome']})"
                )
        for name, value in figures["ratios"].items():
            print(f"  {store:8} ratio capsync/naive {name:18} {value}")
    if "event_latency_s" in results:
        e = results["event_latency_s"]
        print(f"  event latency: p50 {e['p50']}s  p95 {e['p95']}s over {e['samples']} containers")
    if "push" in results:
        print_push(results["push"])
    if "amqp" in results:
        print("\n".join(amqp.summary(results["amqp"])))
    if "health" in results:
        print(f"  {health.summary(results['health'])}")
    if "grpc" in results:
        grpc_api.report(results["grpc"])
    if "kubernetes_steady" in results:
        k = results["kubernetes_steady"]
        for phase in ("before", "after"):
            s = k[phase]
            print(
                f"  kubernetes steady cycle at {k['pods']} pods, {phase:6} the cache: "
                f"requests {s['requests']:3}  cpu {s['cpu_s']:6.3f}s  wall {s['wall_s']:6.3f}s"
            )
    for name, met in results["targets"].items():
        if name.endswith("_met"):
            print(f"  target {name.removesuffix('_met'):28} {'met' if met else 'MISSED'}")


if __name__ == "__main__":
    main()
