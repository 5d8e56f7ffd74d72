"""A private RabbitMQ node for the tests (recipe: shared/design/SERVICES.md).

Started once per session from Debian's ``rabbitmq-server`` (its own epmd first, in the
foreground, so that both are ours to stop by PID), on free loopback ports in a temporary
directory. ``restart`` stops and starts the same node on the same ports with the same
data: durable queues and persistent messages survive, as on a real broker restart.
Without the package the tests that need it skip, except under CI=true, where they fail
(tests/check.sh installs it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import pytest

from tests.services import free_port, missing

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
EPMD = "epmd"


@dataclass
class Broker:
    directory: Path
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    epmd_port: int = field(default_factory=free_port)
    node: str = field(default_factory=lambda: f"capsync-{uuid.uuid4().hex[:6]}@localhost")
    _server: subprocess.Popen[bytes] | None = None
    _epmd: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def _environment(self) -> dict[str, str]:
        d = self.directory
        (d / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n")
        (d / "enabled_plugins").write_text("[].\n")
        (d / "rabbitmq-env.conf").write_text("")
        return {
            **os.environ,
            "HOME": str(d),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def start(self) -> None:
        env = self._environment()
        if self._epmd is None:
            self._epmd = subprocess.Popen(
                [EPMD, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        self._server = subprocess.Popen(
            [str(SERVER)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._server.poll() is not None:
                raise RuntimeError(
                    f"rabbitmq-server exited with {self._server.returncode}; "
                    f"logs in {self.directory / 'log'}"
                )
            try:
                self.connection().close()
                return
            except pika.exceptions.AMQPError:
                time.sleep(0.2)
        raise RuntimeError("rabbitmq-server did not accept AMQP within 60 s")

    def stop(self) -> None:
        """SIGTERM to the node (a graceful stop); epmd stays for the restart."""
        if self._server is not None and self._server.poll() is None:
            self._server.send_signal(signal.SIGTERM)
            self._server.wait(timeout=60)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._epmd is not None:
            self._epmd.terminate()
            self._epmd.wait(timeout=10)

    def connection(self) -> pika.BlockingConnection:
        return pika.BlockingConnection(
            pika.URLParameters(self.url + "?connection_attempts=1&socket_timeout=2")
        )

    @contextmanager
    def channel(self) -> Iterator[Any]:
        connection = self.connection()
        try:
            yield connection.channel()
        finally:
            connection.close()

    def publish(
        self, queue: str, *bodies: Any, headers: dict[str, Any] | None = None, confirm: bool = True
    ) -> None:
        """Publish as the seed's publish_capabilities does (default exchange, routing key
        = the queue), persistent, with confirms unless told not to (the seed waits for
        none)."""
        connection = self.connection()
        try:
            channel = connection.channel()
            if confirm:
                channel.confirm_delivery()
            for body in bodies:
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                channel.basic_publish(
                    "", queue, raw, pika.BasicProperties(delivery_mode=2, headers=headers)
                )
        finally:
            connection.close()

    def take(self, queue: str, count: int, timeout: float = 20) -> list[tuple[Any, bytes]]:
        """Consume ``count`` messages from ``queue`` (properties, body), acknowledging."""
        got: list[tuple[Any, bytes]] = []
        deadline = time.monotonic() + timeout
        connection = self.connection()
        try:
            channel = connection.channel()
            while len(got) < count and time.monotonic() < deadline:
                method, properties, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    time.sleep(0.05)
                    continue
                got.append((properties, body))
        finally:
            connection.close()
        return got

    def depth(self, queue: str) -> int:
        connection = self.connection()
        try:
            count: int = (
                connection.channel().queue_declare(queue, passive=True).method.message_count
            )
            return count
        finally:
            connection.close()


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[Broker]:
    if not SERVER.exists():
        missing(f"RabbitMQ: {SERVER} is not installed (Debian: rabbitmq-server)")
    with tempfile.TemporaryDirectory(prefix="capsync-rabbitmq-") as directory:
        broker = Broker(Path(directory))
        try:
            broker.start()
            yield broker
        finally:
            broker.close()
