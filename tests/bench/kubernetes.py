"""The kubernetes source's steady cycle at N pods against the API double, before and after
its informer-style cache: API requests and CPU seconds of the cycle's thread (the listing
plus validation; the double serves from other threads of this process and is not counted).

- before: what every cycle did without the cache: page through every pod and resource,
  then validate every declaration again (no fingerprints);
- after: the cache answers and validation is reused by fingerprint.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from discovery.normalise import Normaliser
from discovery.sources.kubernetes import KubernetesSource
from tests.doubles.kubernetes import KubernetesDouble


def steady_cycle(pods: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="capsync-bench-k8s-") as tmp,
        KubernetesDouble() as double,
    ):
        for i in range(pods):
            declaration = {
                "id": f"pod-worker-{i:05}",
                "static_analysis_tools": [{"tool_name": "clippy"}],
                "metadata": {"pool": f"pool-{i % 20}"},
            }
            double.put_pod(
                f"ns-{i % 20}",
                f"worker-{i:05}",
                annotations={"worker.capabilities": json.dumps(declaration)},
            )
        kubeconfig = str(double.write_kubeconfig(Path(tmp) / "kubeconfig"))
        source = KubernetesSource(kubeconfig=kubeconfig)
        before = measure(double, lambda: Normaliser().normalise(source.list(), source.name))
        stop = threading.Event()
        watcher = threading.Thread(target=source.watch, args=(lambda _: None, stop), daemon=True)
        watcher.start()
        normaliser = Normaliser()
        for _ in range(2):  # the first list fills the cache; then validation is learnt
            normaliser.normalise(source.list(), source.name)
        after = measure(double, lambda: normaliser.normalise(source.list(), source.name))
        stop.set()
        watcher.join(timeout=5)
    return {"pods": pods, "before": before, "after": after}


def measure(double: KubernetesDouble, cycle: Any) -> dict[str, Any]:
    requests = len(double.requests)
    cpu, wall = time.thread_time(), time.perf_counter()
    found, invalid = cycle()
    return {
        "requests": len(double.requests) - requests,
        "cpu_s": round(time.thread_time() - cpu, 3),
        "wall_s": round(time.perf_counter() - wall, 3),
        "declarations": len(found),
        "invalid": len(invalid),
    }
