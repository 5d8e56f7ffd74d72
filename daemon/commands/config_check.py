"""`capsync config check [FILE]`: the effective configuration, or every error in it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from config import loading
from config.errors import ConfigError
from daemon.settings_model import SETTINGS

REDACTED = "<redacted>"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = sub.add_parser("config", help="inspect the configuration")
    config_sub = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    check = config_sub.add_parser(
        "check",
        help="print the effective configuration (secrets redacted) or its errors",
        description="Load FILE (default: /etc/capsync/capsync.toml if it exists) with the "
        "environment applied (CONSUL_*, CAPSYNC_<SECTION>__<KEY>) and print the "
        "effective configuration as JSON, secrets redacted. Exit 2 and print "
        "every error with its key path when it is invalid.",
    )
    check.add_argument("file", nargs="?", type=Path, default=None)
    check.set_defaults(handler=check_command)


def check_command(args: argparse.Namespace) -> int:
    try:
        settings = loading.load(SETTINGS, args.file)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    effective = settings.model_dump(mode="json")
    if len(settings.registries) == 1:
        # One registry is shown as the one [registry] table it can be written as.
        effective["registry"] = effective.pop("registries")[0]
    if settings.consul.token is not None:
        effective["consul"]["token"] = REDACTED
    # allow_nan=False: the output is strict JSON (settings refuse inf and nan anyway).
    print(json.dumps(effective, indent=2, allow_nan=False))
    return 0
