"""Options shared by the commands that read settings, and their translation to Settings."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from config import loading
from config.settings import Settings
from daemon.registry.table import REGISTRY_KINDS
from daemon.settings_model import SETTINGS
from discovery.sources.table import SOURCE_KINDS


def add_registry_options(parser: argparse.ArgumentParser, *, select: bool = False) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"TOML settings (default: {loading.DEFAULT_PATH} if it exists)",
    )
    if select:
        parser.add_argument(
            "--registry",
            action="append",
            default=None,
            metavar=f"NAME|{REGISTRY_KINDS.metavar}",
            help="the configured registry NAME to read, or a registry "
            "(default: the first configured; consul, from "
            "CONSUL_HTTP_ADDR)",
        )
    else:
        parser.add_argument(
            "--registry",
            action="append",
            default=None,
            metavar=REGISTRY_KINDS.metavar,
            help="a registry (repeatable: each is kept in step; replaces the "
            "configured registries; default: consul, from "
            "CONSUL_HTTP_ADDR)",
        )
    parser.add_argument("--service", default=None, help="service name (default: worker)")
    parser.add_argument(
        "--owner",
        default=None,
        help="owner id; names the node capsync-<owner> (default: host name)",
    )


def add_sync_options(parser: argparse.ArgumentParser) -> None:
    add_registry_options(parser)
    parser.add_argument(
        "--source",
        action="append",
        default=None,
        metavar="TYPE:ARG",
        help=f"a discovery source: {SOURCE_KINDS.metavar} (repeatable; "
        "replaces the configured sources; order is precedence)",
    )
    parser.add_argument(
        "--policy",
        choices=["sync", "upsert-only", "create-only"],
        default=None,
        help="sync (default) | upsert-only | create-only",
    )
    parser.add_argument(
        "--allow-mass-delete",
        action="store_true",
        default=None,
        help="apply deletions even past the mass-deletion guard",
    )
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=None,
        help="log lines as key=value text (default) or JSON",
    )


def settings_from_args(args: argparse.Namespace, *, registries: bool = True) -> Settings:
    """Settings from --config, the environment and the options; ``registries=False``
    leaves --registry out (when it names a configured registry)."""
    registry: dict[str, Any] = {}
    for option in ("service", "owner", "policy", "allow_mass_delete"):
        if getattr(args, option, None) is not None:
            registry[option] = getattr(args, option)
    daemon = {
        key: value
        for key, value in (
            ("interval", getattr(args, "interval", None)),
            ("listen", getattr(args, "listen", None)),
            ("log_format", getattr(args, "log_format", None)),
        )
        if value is not None
    }
    sources = getattr(args, "source", None)
    chosen = args.registry if registries else None
    return loading.load(
        SETTINGS,
        args.config,
        overrides=loading.Overrides(
            sections={"registry": registry, "daemon": daemon},
            sources=_named([SOURCE_KINDS.parse_arg(arg) for arg in sources], "type")
            if sources
            else None,
            registries=_named([REGISTRY_KINDS.parse_arg(arg) for arg in chosen], "backend")
            if chosen
            else None,
        ),
    )


def _named(tables: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    """Give repeated command-line kinds distinct names: file, file-2, file-3..."""
    seen: dict[str, int] = {}
    for table in tables:
        count = seen[table[tag]] = seen.get(table[tag], 0) + 1
        table["name"] = table[tag] if count == 1 else f"{table[tag]}-{count}"
    return tables
