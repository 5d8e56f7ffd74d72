"""`capsync validate`: check declarations the way the daemon would, without a registry."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from config.errors import DeclarationError
from config.settings import default_owner
from discovery import codec, documents, full_entry, intake, seed_json
from discovery.codec import Entry
from discovery.consul.fields import service_fields
from discovery.normalise import Found, Invalid, normalise
from discovery.sources.base import Declaration, Listing
from discovery.sources.file import FileSource, read_file

STDIN = "-"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "validate",
        help="check declaration files (or stdin) and print each result",
        description=(
            "Validate declarations: a JSON object, a JSON array of objects, YAML "
            "(one or more documents), or a directory of *.json/*.yaml/*.yml files. "
            "Prints 'ok <id>' or 'error <ref>: <field>: <message>' per declaration. "
            "Exit 0 when all are valid, 1 when any is invalid, 2 on usage errors."
        ),
    )
    parser.add_argument(
        "paths",
        nargs="*",
        default=[STDIN],
        metavar="PATH",
        help="files or directories; '-' (the default) reads stdin",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list: canonical declarations or their errors",
    )
    output.add_argument(
        "--format",
        choices=["text", "consul"],
        default="text",
        help="'consul' prints the Consul service fields each would register",
    )
    parser.add_argument(
        "--service", default="worker", help="service name for --format consul (default: worker)"
    )
    parser.add_argument(
        "--owner", default=None, help="owner id for --format consul (default: the host name)"
    )
    parser.set_defaults(handler=run)


def read_paths(paths: list[str], command: str) -> tuple[list[Found], list[Invalid]] | None:
    """The declarations in files, directories and stdin (``-``), validated; None (after
    saying which) when a path does not exist."""
    listing = Listing()
    for raw_path in paths:
        if raw_path == STDIN:
            _read_stdin(listing)
            continue
        path = Path(raw_path)
        if path.is_dir():
            listing.extend(FileSource(path).list())
        elif path.exists():
            listing.extend(read_file(path, "file"))
        else:
            print(f"capsync {command}: {raw_path}: no such file or directory", file=sys.stderr)
            return None
    return normalise(_strings_checked(listing), "file")


def run(args: argparse.Namespace) -> int:
    read = read_paths(args.paths, "validate")
    if read is None:
        return 2
    found, invalid = read
    if not found and not invalid:
        print("capsync validate: no declarations found", file=sys.stderr)
    if args.json:
        print(json.dumps([_as_json(item) for item in _in_order(found, invalid)], indent=2))
    elif args.format == "consul":
        return _print_consul(found, invalid, args.service, args.owner or default_owner())
    else:
        for item in _in_order(found, invalid):
            if isinstance(item, Found):
                print(f"ok {item.caps.id}")
            else:
                print_errors([item], sys.stdout)
    return 1 if invalid else 0


def _print_consul(found: list[Found], invalid: list[Invalid], service: str, owner: str) -> int:
    """The Consul fields of each declaration; one Consul's meta rules refuse is reported
    instead (the other registries would take it)."""
    now = int(time.time())
    fit = []
    refused = False
    for item in found:
        entry = _consul(item, service, owner, now)
        for problem in (problems := codec.consul_problems(entry)):
            where = item.declaration.ref
            print(f"error {where}: Consul would refuse it: {problem}", file=sys.stderr)
        refused |= bool(problems)
        if not problems:
            fit.append(service_fields(entry))
    print(json.dumps(fit, indent=2))
    print_errors(invalid, sys.stderr)
    return 1 if invalid or refused else 0


def _read_stdin(listing: Listing) -> None:
    """Standard input: JSON through the daemon's own intake (the bytes rules a pushed
    registration meets), YAML through the document reader."""
    ref = "<stdin>"
    # The limit plus one byte is enough to tell the input is too large.
    raw = sys.stdin.buffer.read(documents.MAX_DOCUMENT_BYTES + 1)
    try:
        if raw.lstrip()[:1] in (b"{", b"["):
            data = intake.parse(raw, limit=documents.MAX_DOCUMENT_BYTES)
            items = (
                [(f"{ref}[{i}]", item) for i, item in enumerate(data)]
                if isinstance(data, list)
                else [(ref, data)]
            )
        else:
            items = documents.parse(raw, ref=ref, fmt="yaml", many=True)
    except intake.InvalidMessage as exc:
        listing.invalid.append(DeclarationError(ref, exc.problems))
        return
    except DeclarationError as error:
        listing.invalid.append(error)
        return
    listing.declarations.extend(Declaration("file", item_ref, data) for item_ref, data in items)


def _strings_checked(listing: Listing) -> Listing:
    """The intake's depth and string rules (no lone surrogate, no U+0000) on every
    declaration read, each refused with its field path."""
    out = Listing(invalid=list(listing.invalid))
    for declaration in listing.declarations:
        try:
            body = declaration.body()  # a file's one object is parsed when it is needed
            intake.check(body)
        except DeclarationError as exc:
            out.invalid.append(exc)
        except intake.InvalidMessage as exc:
            out.invalid.append(DeclarationError(declaration.ref, exc.problems))
        else:
            out.declarations.append(replace(declaration, data=body))
    return out


def _in_order(found: list[Found], invalid: list[Invalid]) -> list[Found | Invalid]:
    """Results sorted by reference (naturally: x[2] before x[10]), to match them to files."""
    items: list[Found | Invalid] = [*found, *invalid]
    return sorted(items, key=_natural_ref)


def _natural_ref(item: Found | Invalid) -> list[Any]:
    ref = item.declaration.ref if isinstance(item, Found) else item.ref
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", ref)]


def _as_json(item: Found | Invalid) -> dict[str, Any]:
    if isinstance(item, Found):
        return seed_json.to_seed(item.caps)
    return {
        "ref": item.ref,
        "errors": [{"loc": loc, "msg": msg} for loc, msg in item.error.problems],
    }


def _consul(item: Found, service: str, owner: str, now: int) -> Entry:
    """The entry as capsync would register it now (its document is kept beside it); only
    the Consul registry judges it by Consul's meta rules."""
    return full_entry.encode(
        item.caps,
        codec.Provenance(service=service, owner=owner, source="file", ref=item.declaration.ref),
        now=now,
    )


def print_errors(invalid: list[Invalid], stream: Any) -> None:
    for item in invalid:
        for loc, msg in item.error.problems:
            where = f"{loc}: " if loc else ""
            print(f"error {item.ref}: {where}{msg}", file=stream)
