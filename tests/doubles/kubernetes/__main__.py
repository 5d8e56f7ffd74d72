"""``python -m tests.doubles.kubernetes --port PORT``: serve the double until killed.

Prints the URL, then the paths of two kubeconfigs for it (capsync's service account and a
cluster administrator), so kubectl or capsync can be pointed at it by hand.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
from pathlib import Path

from . import KubernetesDouble


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.doubles.kubernetes")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any)")
    parser.add_argument(
        "--no-crd",
        action="store_true",
        help="serve as if the WorkerCapabilities CRD were not installed",
    )
    args = parser.parse_args()
    double = KubernetesDouble(args.port, crd_installed=not args.no_crd).start()
    directory = Path(tempfile.mkdtemp())
    kubeconfig = double.write_kubeconfig(directory / "kubeconfig")
    admin = double.write_kubeconfig(directory / "kubeconfig-admin", admin=True)
    print(double.url, flush=True)
    print(f"kubeconfig: {kubeconfig}", flush=True)
    print(f"kubeconfig (admin): {admin}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        double.stop()


if __name__ == "__main__":
    main()
