"""Options shared by the commands that read settings, and their translation to Settings."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from config import loading
from config.settings import Settings
from daemon.wiring import parse_registry_arg, parse_source_arg


def add_registry_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help=f"TOML settings (default: {loading.DEFAULT_PATH} if it exists)")
    parser.add_argument("--registry", default=None,
                        metavar="consul|sqlite:PATH|redis[:URL]|postgres[:DSN]",
                        help="registry backend (default: consul, from CONSUL_HTTP_ADDR)")
    parser.add_argument("--service", default=None, help="service name (default: worker)")
    parser.add_argument("--owner", default=None,
                        help="owner id; names the node capsync-<owner> (default: host name)")


def add_sync_options(parser: argparse.ArgumentParser) -> None:
    add_registry_options(parser)
    parser.add_argument("--source", action="append", default=None, metavar="TYPE:ARG",
                        help="a discovery source, e.g. file:DIR (repeatable; replaces the "
                             "configured sources; order is precedence)")
    parser.add_argument("--policy", choices=["sync", "upsert-only", "create-only"],
                        default=None, help="sync (default) | upsert-only | create-only")
    parser.add_argument("--allow-mass-delete", action="store_true", default=None,
                        help="apply deletions even past the mass-deletion guard")
    parser.add_argument("--log-format", choices=["text", "json"], default=None,
                        help="log lines as key=value text (default) or JSON")


def settings_from_args(args: argparse.Namespace) -> Settings:
    registry: dict[str, Any] = {}
    if args.registry:
        registry.update(parse_registry_arg(args.registry))
    for option in ("service", "owner", "policy", "allow_mass_delete"):
        if getattr(args, option, None) is not None:
            registry[option] = getattr(args, option)
    daemon = {
        key: value
        for key, value in (("interval", getattr(args, "interval", None)),
                           ("listen", getattr(args, "listen", None)),
                           ("log_format", getattr(args, "log_format", None)))
        if value is not None
    }
    sources = getattr(args, "source", None)
    return loading.load(
        args.config,
        overrides={"registry": registry, "daemon": daemon},
        sources=_named([parse_source_arg(arg) for arg in sources]) if sources else None,
    )


def _named(sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give repeated command-line sources distinct names: file, file-2, file-3..."""
    seen: dict[str, int] = {}
    for source in sources:
        count = seen[source["type"]] = seen.get(source["type"], 0) + 1
        source["name"] = source["type"] if count == 1 else f"{source['type']}-{count}"
    return sources
