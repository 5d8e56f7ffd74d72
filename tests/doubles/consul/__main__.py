"""Run the double standalone: `python -m tests.doubles.consul --port PORT`.

Options mirror `ConsulDouble`'s; `--fault JSON` (repeatable) injects a fault from the start
(fields in faults.py), and `/_double/faults` changes them while it runs.
Prints the URL it bound (the real port when given 0) as its only output line, then serves
until SIGTERM or SIGINT and exits 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from .double import ConsulDouble
from .faults import FaultError, parse_fault


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.doubles.consul")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-txn-ops", type=int, choices=(64, 128), default=128)
    parser.add_argument("--acl-token", default=None)
    parser.add_argument("--default-token", default="", help="used when a request has none")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="JSON",
        help='a fault to inject, e.g. {"path": "/v1/txn", "status": 502}; repeatable',
    )
    parser.add_argument("--datacenter", default="dc1")
    parser.add_argument("--node-name", default="consul-double")
    args = parser.parse_args(argv)
    try:
        faults = [parse_fault(text) for text in args.fault]
    except FaultError as exc:
        parser.error(f"--fault: {exc}")
    done = threading.Event()

    def finish(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    double = ConsulDouble(
        port=args.port,
        max_txn_ops=args.max_txn_ops,
        acl_token=args.acl_token,
        default_token=args.default_token,
        datacenter=args.datacenter,
        node_name=args.node_name,
    )
    for fault in faults:
        double.inject(fault)
    double.start()
    print(double.url, flush=True)
    try:
        done.wait()
    finally:
        double.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
