"""`capsync publish FILE... --amqp URL`: announce declarations through the queue, as the
seed's ``publish_capabilities`` does (default exchange, routing key = the queue name,
body = the declaration JSON), for workers and CI jobs that register themselves.

Every declaration is validated first: when any is invalid, nothing is published. Each
message is persistent and ``mandatory``, with publisher confirms: the command exits 0
only when the broker has taken every message into the queue.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import ClassVar

from pydantic import ConfigDict

from config import loading
from config.errors import ConfigError, SourceError
from config.settings import MAX_DURATION, AmqpConnection, redact_url
from daemon.commands.validate import STDIN, print_errors, read_paths
from discovery import amqp_link, intake, seed_json

URL_VARIABLE = "CAPSYNC_AMQP_URL"


class Broker(AmqpConnection):
    """Where `capsync publish` sends: the command line's options, the URL else from
    ``$CAPSYNC_AMQP_URL`` (handed over by config/loading.py)."""

    environment: ClassVar[Mapping[str, str]] = {"url": URL_VARIABLE}
    # Its errors name the connection, as they did before this class existed.
    model_config = ConfigDict(title="AmqpConnection")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "publish",
        help="validate declarations and publish them to the RabbitMQ queue",
        description="Validate declarations (files, directories, '-' for stdin) and publish "
        "each to the queue capsync's amqp source consumes. Exit 0 when the "
        "broker confirmed all, 1 when any is invalid (nothing is published) "
        "or the broker refused, 2 on usage errors.",
    )
    parser.add_argument("paths", nargs="*", default=[STDIN], metavar="FILE")
    parser.add_argument(
        "--amqp",
        metavar="URL",
        default=None,
        help=f"amqp:// or amqps:// URL (default: ${URL_VARIABLE}); keep the "
        "password out of it with --password-file",
    )
    parser.add_argument(
        "--queue", default="worker.capabilities", help="the queue (default: worker.capabilities)"
    )
    parser.add_argument(
        "--ttl",
        default=None,
        metavar="SECONDS",
        help="a lease, seconds (above 0, at most the consumer's max_ttl): the "
        "registration leaves unless published again",
    )
    parser.add_argument("--password-file", type=Path, default=None)
    parser.add_argument("--ca-file", type=Path, default=None, help="CA bundle for amqps")
    parser.add_argument("--cert-file", type=Path, default=None, help="client certificate")
    parser.add_argument("--key-file", type=Path, default=None, help="client key")
    parser.set_defaults(handler=run)


def header_number(seconds: float) -> int | Decimal:
    """A lease as an AMQP header can carry it (a table has no plain float): an integer,
    or a decimal; the consumer reads both as seconds."""
    return int(seconds) if seconds.is_integer() else Decimal(str(seconds))


def run(args: argparse.Namespace) -> int:
    given = {
        "url": args.amqp,
        "password_file": args.password_file,
        "ca_file": args.ca_file,
        "cert_file": args.cert_file,
        "key_file": args.key_file,
    }
    options = loading.with_environment(Broker, {k: v for k, v in given.items() if v is not None})
    if not options.get("url"):
        print(f"capsync publish: give --amqp URL (or set {URL_VARIABLE})", file=sys.stderr)
        return 2
    try:
        conn = Broker(**options)
    except ValueError as exc:
        raise ConfigError(f"--amqp: {exc}") from None
    read = read_paths(args.paths, "publish")
    if read is None:
        return 2
    found, invalid = read
    if invalid:
        print_errors(invalid, sys.stderr)
        print(f"capsync publish: {len(invalid)} invalid; nothing published", file=sys.stderr)
        return 1
    try:
        lease = intake.ttl_text(args.ttl, field="--ttl", max_ttl=MAX_DURATION)
    except intake.InvalidMessage as exc:
        print(f"capsync publish: {exc.problems[0][0]}: {exc.problems[0][1]}", file=sys.stderr)
        return 2
    headers = {"ttl": header_number(lease)} if lease is not None else None
    pika = amqp_link.pika_module()
    try:
        connection = amqp_link.connect(conn, "capsync publish")
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            for item in found:
                body = json.dumps(seed_json.to_seed(item.caps)).encode()
                channel.basic_publish(
                    "", args.queue, body, amqp_link.persistent(headers), mandatory=True
                )
                print(f"published {item.caps.id}")
        finally:
            if connection.is_open:
                connection.close()
    except pika.exceptions.UnroutableError:
        raise SourceError(
            f"no queue {args.queue!r} at {redact_url(args.amqp)}: start the "
            "consumer (capsync run with an amqp source) first"
        ) from None
    except amqp_link.failures() as exc:
        raise SourceError(f"{redact_url(args.amqp)}: {exc!r}") from None
    return 0
