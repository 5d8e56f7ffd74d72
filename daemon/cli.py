"""The `capsync` command: argument parsing and dispatch to daemon.commands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import version

from config.errors import CapsyncError, ConfigError
from daemon.commands import config_check, find, publish, run, validate
from daemon.registry.table import REGISTRY_KINDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capsync",
        description=(
            "Sync worker capability declarations (Docker labels, Kubernetes annotations "
            "and resources, Consul services, files, pushed registrations) into one or "
            f"more registries ({', '.join(REGISTRY_KINDS.kinds)}), and query them."
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
    """Exit 0 on success, 1 when the work failed (a cycle, a query), 2 for a
    configuration or usage error; always one line per error, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
        sys.stdout.flush()
    except ConfigError as exc:
        print(f"capsync {args.command}: {exc}", file=sys.stderr)
        return 2
    except CapsyncError as exc:
        print(f"capsync {args.command}: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        # An optional extra that is not installed (redis, postgres, amqp, grpc, ...),
        # whichever command needs it: one line with the hint, as a configuration error.
        print(f"capsync {args.command}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`capsync find | head`): stop quietly, as cat does.
        # Python flushes stdout again at exit, so point it at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
