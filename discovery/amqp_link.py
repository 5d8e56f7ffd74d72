"""One way to open a RabbitMQ connection (pika, blocking) from ``AmqpConnection``
settings, shared by the ``amqp`` source, the change-event publisher and ``capsync
publish``; and the delays their reconnect loops wait (``discovery.backoff``).

pika is the optional extra ``capsync[amqp]``, imported here only when a connection is
opened. Its exceptions do not leave this package's callers untranslated: ``FAILURES`` is
what a broken connection or channel raises.
"""

from __future__ import annotations

import logging
import re
import ssl
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from config.errors import ConfigError
from config.secrets import read_secret
from config.settings import AmqpConnection, redact_url
from discovery.backoff import Backoff

if TYPE_CHECKING:
    import pika

RECONNECT_FIRST, RECONNECT_CEILING = 0.5, 30.0  # seconds
EXTRA = "RabbitMQ support needs the extra: pip install 'capsync[amqp]'"


def pika_module() -> Any:
    try:
        import pika  # noqa: PLC0415 (optional extra)
    except ImportError as exc:
        raise ImportError(f"{EXTRA} ({exc})") from None
    # pika logs each failed attempt with a traceback; capsync reports them itself, one
    # line each (amqp_consumer_down, amqp_events_down).
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    return pika


def failures() -> tuple[type[BaseException], ...]:
    """What a lost broker, a refused login or a closed channel raises."""
    exceptions = pika_module().exceptions
    return (exceptions.AMQPError, OSError)


# RabbitMQ's answer to a queue declared with other arguments than the queue it has:
# "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in vhost '/':
# received none but current is the value of type 'longstr' of 'quorum'".
_INEQUIVALENT = re.compile(r"inequivalent arg '([^']+)' for queue '([^']*)'[^:]*: (.*)")


def describe(exc: BaseException) -> str:
    """One line for a broker failure; a queue declared elsewhere with other arguments
    (406 PRECONDITION_FAILED) names the argument and what to do about it."""
    text = f"{type(exc).__name__}: {str(exc) or repr(exc)}"[:500]
    code = getattr(exc, "reply_code", None)
    reply = str(getattr(exc, "reply_text", ""))
    found = _INEQUIVALENT.search(reply)
    if code != 406 or found is None:
        return text
    argument, queue, detail = found.groups()
    return (
        f"RabbitMQ refused to declare queue {queue!r} (PRECONDITION_FAILED): it exists "
        f"with another {argument!r} ({detail[:200]}); set passive = true to use the "
        "queue as it was declared"
    )


def parameters(conn: AmqpConnection, name: str) -> pika.URLParameters:
    """The URL's parameters with the password from ``password_file`` and the TLS files;
    ConfigError naming the setting when a file cannot be read."""
    pika = pika_module()
    url = conn.url
    if conn.password_file is not None:
        url = _with_password(url, "-")  # replaced below; pika needs one to parse the URL
    try:
        params = pika.URLParameters(url)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"amqp url {redact_url(conn.url)}: {exc}") from None
    if conn.password_file is not None:
        password = read_secret(conn.password_file, "amqp.password_file")
        params.credentials = pika.PlainCredentials(params.credentials.username, password)
    if conn.url.startswith("amqps://"):
        try:
            context = ssl.create_default_context(cafile=str(conn.ca_file) if conn.ca_file else None)
            if (pair := conn.cert_pair()) is not None:
                context.load_cert_chain(*pair)
        except (OSError, ssl.SSLError) as exc:
            files = ", ".join(str(f) for f in (conn.ca_file, conn.cert_file, conn.key_file) if f)
            raise ConfigError(f"amqp TLS files ({files}): {exc}") from None
        params.ssl_options = pika.SSLOptions(context, params.host)
    params.client_properties = {"connection_name": name}
    return params


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user = parts.username or "guest"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def connect(conn: AmqpConnection, name: str) -> pika.BlockingConnection:
    return pika_module().BlockingConnection(parameters(conn, name))


def persistent(headers: dict[str, Any] | None = None) -> pika.BasicProperties:
    """A persistent JSON message (it survives a broker restart in a durable queue)."""
    return pika_module().BasicProperties(
        content_type="application/json", delivery_mode=2, headers=headers
    )


def reconnect_backoff() -> Backoff:
    """Doubling waits between reconnects to the broker, from half a second up to 30."""
    return Backoff(RECONNECT_FIRST, RECONNECT_CEILING)
