"""The `capsync` command: argument parsing and dispatch to daemon.commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import version

from config.errors import CapsyncError
from daemon.commands import config_check, find, publish, run, validate


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capsync",
        description=(
            "Sync worker capability declarations (Docker labels, Kubernetes annotations "
            "and resources, Consul services, files) into the Consul catalogue, and query it."
        ),
    )
    parser.add_argument("--version", action="version", version=f"capsync {version('capsync')}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    validate.add_parser(sub)
    run.add_parsers(sub)
    find.add_parsers(sub)
    config_check.add_parser(sub)
    publish.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except CapsyncError as exc:
        print(f"capsync {args.command}: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
