"""`capsync run --once` and `capsync plan`: one full sync cycle (planned, or applied)."""

from __future__ import annotations

import argparse
import json
import sys

from config.settings import Settings
from daemon.commands.common import add_sync_options, settings_from_args
from daemon.cycle import Handover, Syncer
from daemon.cycle_report import CycleReport
from daemon.logs import configure
from daemon.report import log_problems, plan_json, plan_table, summary
from daemon.service import Daemon
from daemon.wiring import build_normaliser, build_registries, build_sources, close_all
from discovery.sources.base import Source


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser(
        "run",
        help="sync declarations into the registry",
        description="Discover declarations, validate them, diff against the registry and "
        "write only the changes. Exit 0 when the cycle succeeded, 1 when a "
        "source or the registry failed, 2 on a configuration or usage error.",
    )
    add_sync_options(run)
    run.add_argument("--once", action="store_true", help="run one cycle and exit")
    run.add_argument(
        "--interval",
        default=None,
        metavar="DURATION",
        help="full resync interval, e.g. 60s, 5m (default: 60s)",
    )
    run.add_argument(
        "--listen",
        default=None,
        metavar="ADDR|off",
        help="HTTP endpoints address (default: 127.0.0.1:9469)",
    )
    run.add_argument("--dry-run", action="store_true", help="print the plan; write nothing")
    run.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON")
    run.set_defaults(handler=run_command)
    plan = sub.add_parser(
        "plan",
        help="show what a sync would change, writing nothing",
        description="The same cycle as 'run --once --dry-run': print the plan.",
    )
    add_sync_options(plan)
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.set_defaults(handler=run_command, once=True, dry_run=True)


def run_command(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if not settings.sources:
        print(
            f"capsync {args.command}: no sources: give --source TYPE:ARG or [[sources]] "
            "in the config",
            file=sys.stderr,
        )
        return 2
    configure(settings.daemon.log_format)
    if not args.once:
        return Daemon(lambda: settings_from_args(args)).run()
    report = sync_once(settings, dry_run=args.dry_run)
    log_problems(report)
    if all(reg.registry_error for reg in report.registries):
        return 1
    several = len(report.registries) > 1
    if args.dry_run and args.json:
        plans = {reg.name: plan_json(report, reg) for reg in report.registries}
        print(json.dumps(plans if several else plans[report.registries[0].name], indent=2))
    elif args.dry_run:
        for reg in report.registries:
            if several:
                print(f"registry {reg.name}:")
            print(plan_table(reg.changes))
        print(summary(report))
    else:
        print(summary(report))
    return 0 if report.ok else 1


def sync_once(settings: Settings, *, dry_run: bool) -> CycleReport:
    registries = build_registries(settings)
    sources: list[Source] = []
    try:
        normaliser = build_normaliser(settings)
        sources = build_sources(settings, normaliser.validations)
        handover = Handover(normaliser=normaliser)
        return Syncer(sources, registries, handover=handover).run_once(dry_run=dry_run)
    finally:
        close_all([*sources, *(target.registry for target in registries)])
