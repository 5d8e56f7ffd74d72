"""The gRPC API's figures: unary Register throughput with 20 concurrent clients (each its
own channel), and Watch delivery latency from the apply (the registry write, seen by the
Consul double) to the watching client, p50 and p95.

Against a running daemon (a child process, the push source on SQLite, the gRPC listener
on loopback, no token) and the Consul double (64 ops a transaction), both on this machine.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from discovery.proto import registry_pb2 as pb
from discovery.proto import registry_pb2_grpc as pb_grpc
from tests.consul_target import ConsulTarget
from tests.daemon_process import wait_until
from tests.doubles.consul import ConsulDouble
from tests.grpc_daemon import GrpcDaemon


def _daemon(target: ConsulTarget, state: Path) -> GrpcDaemon:
    daemon = GrpcDaemon(target, state, token=None).started()
    daemon.wait_for(lambda line: "event=cycle" in line)
    return daemon


def _request(worker: str) -> pb.RegisterRequest:
    return pb.RegisterRequest(
        capabilities=pb.WorkerCapabilitiesProto(
            id=worker, static_analysis_tools=[pb.ToolCapability(tool_name="clippy")]
        )
    )


def register_throughput(state: Path, workers: int, clients: int) -> dict[str, Any]:
    with ConsulDouble(max_txn_ops=64) as double:
        target = ConsulTarget(double.address, double, owner="bench")
        daemon = _daemon(target, state)
        channels = [grpc.insecure_channel(daemon.grpc_address) for _ in range(clients)]
        try:
            stubs = [pb_grpc.WorkerRegistryStub(c) for c in channels]
            for stub in stubs:  # connected before the clock starts
                stub.List(pb.ListRequest(), timeout=10)

            def client(index: int) -> int:
                ok = 0
                for i in range(index, workers, clients):
                    ok += stubs[index].Register(_request(f"grpc-{i:05}"), timeout=30).success
                return ok

            started = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                acknowledged = sum(pool.map(client, range(clients)))
            seconds = time.perf_counter() - started
            wait_until(lambda: len(target.services()) == workers, 120, 0.05)
            visible = time.perf_counter() - started
        finally:
            for channel in channels:
                channel.close()
            daemon.stop()
    return {
        "workers": workers,
        "clients": clients,
        "acknowledged": acknowledged,
        "seconds": round(seconds, 3),
        "per_second": round(workers / seconds, 1),
        "all_visible_s": round(visible, 3),
    }


def watch_latency(state: Path, samples: int, gap: float) -> dict[str, Any]:
    """One registration every ``gap`` seconds (slower than the 1 s debounce, so each has
    its own apply); each event timed from the transaction that applied it to its arrival
    at a client watching over gRPC."""
    with ConsulDouble(max_txn_ops=64) as double:
        applied: list[float] = []
        record = double._context.record

        def timed(method: str, path: str) -> None:
            if method == "PUT" and path.startswith("/v1/txn"):
                applied.append(time.perf_counter())
            record(method, path)

        double._context.record = timed  # the double's request log, timed
        target = ConsulTarget(double.address, double, owner="bench")
        daemon = _daemon(target, state)
        latencies: list[float] = []
        try:
            with grpc.insecure_channel(daemon.grpc_address) as channel:
                stub = pb_grpc.WorkerRegistryStub(channel)
                watch = stub.Watch(pb.WatchRequest(), timeout=samples * gap + 60)
                head = next(watch)
                for _ in range(head.snapshot.entries):
                    next(watch)
                done = threading.Event()

                def receive() -> None:
                    for message in watch:
                        arrived = time.perf_counter()
                        if message.WhichOneof("kind") == "event":
                            latencies.append(arrived - max(t for t in applied if t <= arrived))
                        if len(latencies) == samples:
                            break
                    done.set()

                receiver = threading.Thread(target=receive, daemon=True)
                receiver.start()
                for i in range(samples):
                    stub.Register(_request(f"watched-{i}"), timeout=10)
                    time.sleep(gap)
                done.wait(30)
                watch.cancel()
        finally:
            daemon.stop()
    ordered = sorted(latencies)
    return {
        "samples": len(ordered),
        "gap_s": gap,
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[math.ceil(0.95 * len(ordered)) - 1] * 1000, 2),
    }


def run(workers: int, state: Path) -> dict[str, Any]:
    for part in ("register", "watch"):
        (state / part).mkdir()
    return {
        "register": register_throughput(state / "register", workers, 20),
        "watch": watch_latency(state / "watch", 20, 1.2),
    }


def report(figures: dict[str, Any]) -> None:
    r, w = figures["register"], figures["watch"]
    print(
        f"  grpc Register: {r['workers']} workers, {r['clients']} clients: "
        f"{r['per_second']}/s ({r['seconds']}s), all visible in Consul {r['all_visible_s']}s"
    )
    print(
        f"  grpc Watch: apply -> client p50 {w['p50_ms']} ms  p95 {w['p95_ms']} ms over "
        f"{w['samples']} events"
    )
