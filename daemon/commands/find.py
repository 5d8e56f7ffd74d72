"""`capsync find`, `list` and `show`: the seed's queries, answered from the registry."""

from __future__ import annotations

import argparse
import json
import sys
import time

from config.errors import ConfigError
from config.settings import RegistrySettingsBase, Settings
from daemon.commands.common import add_registry_options, settings_from_args
from daemon.logs import configure
from daemon.query import Decoded, Query, decoded, worker_json
from daemon.registry.table import REGISTRY_KINDS
from daemon.text_table import render
from daemon.wiring import build_registry
from discovery.model import CATEGORIES


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    find = sub.add_parser(
        "find",
        help="find workers by capability",
        description="Find workers in the registry. --category C --tool T...: any tool of "
        "category C is one of T (by name or alternative). --has T...: provides "
        "every T. --flag F: flag F is true. --meta K=V: metadata K equals V. "
        "--all-required: every required tool is among the named tools. "
        "--verified: every tool live and attested (the library's check; it "
        "does not verify signatures). --permission C:P: some tool of category "
        "C holds permission P. Expired and revoked tools provide nothing. Tool "
        "names compare exactly, as in the library; --ignore-case compares them "
        "case-insensitively (capsync's extension). --healthy: passing workers only "
        "(their health, from where they live).",
    )
    find.add_argument("--category", choices=list(CATEGORIES))
    find.add_argument("--tool", nargs="+", default=[], metavar="T")
    find.add_argument("--has", nargs="+", default=[], metavar="T")
    find.add_argument("--flag", nargs="+", default=[], metavar="F")
    find.add_argument("--meta", nargs="+", default=[], metavar="K=V")
    find.add_argument("--all-required", action="store_true")
    find.add_argument("--verified", action="store_true")
    find.add_argument("--permission", nargs="+", default=[], metavar="CATEGORY:PERMISSION")
    find.add_argument(
        "-i",
        "--ignore-case",
        action="store_true",
        help="compare tool names case-insensitively (capsync's extension; the library "
        "compares them exactly)",
    )
    find.add_argument(
        "--healthy",
        action="store_true",
        help="passing workers only: the health the registry keeps beside each entry "
        "(capsync's extension)",
    )
    _common(find)
    find.set_defaults(handler=find_command)
    listing = sub.add_parser("list", help="list every worker in the registry")
    _common(listing)
    listing.set_defaults(
        handler=find_command,
        category=None,
        tool=[],
        has=[],
        flag=[],
        meta=[],
        all_required=False,
        verified=False,
        permission=[],
        ignore_case=False,
        healthy=False,
    )
    show = sub.add_parser("show", help="show one worker's entries in the registry")
    show.add_argument("id")
    add_registry_options(show, select=True)
    show.add_argument(
        "--json", action="store_true", help="print a JSON list (the default: show prints JSON)"
    )
    show.set_defaults(handler=show_command)


def _common(parser: argparse.ArgumentParser) -> None:
    add_registry_options(parser, select=True)
    parser.add_argument("--json", action="store_true", help="print a JSON list")


def find_command(args: argparse.Namespace) -> int:
    try:
        query = Query.of(
            category=args.category,
            tools=args.tool,
            has=args.has,
            flags=args.flag,
            meta=args.meta,
            all_required=args.all_required,
            verified=args.verified,
            permissions=args.permission,
            now=int(time.time()),
            ignore_case=args.ignore_case,
            healthy=args.healthy,
        )
    except ValueError as exc:
        print(f"capsync find: {exc}", file=sys.stderr)
        return 2
    results = [r for r in _decoded(args, query) if query.keeps(r[1], r[2])]
    if args.json:
        print(
            json.dumps([worker_json(node, entry, caps) for node, entry, caps in results], indent=2)
        )
        return 0
    rows = [("ID", "NODE", "SOURCE", "TOOLS")] + [
        (caps.id, node, entry.source, ",".join(caps.provided_tools(query.now)))
        for node, entry, caps in results
    ]
    print(render(rows))
    return 0


def show_command(args: argparse.Namespace) -> int:
    matches = [r for r in _decoded(args, Query()) if r[1].id == args.id]
    if not matches:
        print(f"capsync show: no worker {args.id!r} in the registry", file=sys.stderr)
        return 1
    print(json.dumps([worker_json(*match) for match in matches], indent=2))
    return 0


def _decoded(args: argparse.Namespace, query: Query) -> list[Decoded]:
    settings, chosen = _chosen_registry(args)
    configure()
    registry = build_registry(settings, chosen)
    try:
        return decoded(registry.entries(query.narrowing()))
    finally:
        registry.close()


def _chosen_registry(args: argparse.Namespace) -> tuple[Settings, RegistrySettingsBase]:
    """``--registry NAME`` picks a configured registry; a registry given as KIND[:ARG]
    (or none) means the first."""
    if args.registry and len(args.registry) == 1:
        configured = settings_from_args(args, registries=False)
        for reg in configured.registries:
            if reg.name == args.registry[0]:
                return configured, reg
        if args.registry[0].partition(":")[0] not in REGISTRY_KINDS.kinds:
            names = ", ".join(reg.name for reg in configured.registries)
            raise ConfigError(
                f"--registry {args.registry[0]!r}: no configured registry of "
                f"that name ({names}) and not {REGISTRY_KINDS.expected()}"
            )
    settings = settings_from_args(args)
    return settings, settings.registries[0]
