"""Private Redis and PostgreSQL servers for the tests (recipes: shared/design/SERVICES.md).

Each is a plain process from Debian's packages on a free loopback port in a temporary
directory, started once per session and stopped by its PID. Without the binaries the
tests that need them skip, except under CI=true, where they fail (tests/check.sh installs
the packages).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

PG_USER = "postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def missing(message: str) -> NoReturn:
    """A server the tests need is not installed: under CI=true that fails the test
    (tests/check.sh installs every one), elsewhere it skips it."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI needs {message} (tests/check.sh installs it)")
    pytest.skip(message)


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on port {port} within 30 s")


@dataclass
class RedisServer:
    port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *extra: str) -> None:
        binary = shutil.which("redis-server") or missing(
            "redis-server is not installed (Debian: redis-server)"
        )
        assert binary is not None
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc, "redis-server")

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (a clean shutdown), or SIGKILL: the server dies where it stands."""
        if self.proc is not None and self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            self.proc.wait(timeout=30)


@dataclass
class PostgresServer:
    port: int
    directory: Path
    bindir: Path

    @property
    def dsn(self) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str) -> list[str]:
        return ["runuser", "-u", PG_USER, "--", *args] if os.geteuid() == 0 else list(args)

    def init(self) -> None:
        self.directory.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, PG_USER, PG_USER)
        subprocess.run(
            self._as_postgres(
                str(self.bindir / "initdb"),
                "-D",
                str(self.directory / "data"),
                "-U",
                PG_USER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ),
            check=True,
            capture_output=True,
        )

    def start(self, *settings: str) -> None:
        """Start; ``settings`` (``-c name=value``) come last and win."""
        options = " ".join(
            (
                f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                *settings,
            )
        )
        self._ctl("-l", str(self.directory / "log"), "-w", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "-w", "stop")

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            self._as_postgres(
                str(self.bindir / "pg_ctl"), "-D", str(self.directory / "data"), *args
            ),
            check=True,
            capture_output=True,
            timeout=60,
        )


def postgres_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="capsync-redis-") as directory:
        server = RedisServer(free_port(), Path(directory))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A fresh cluster, started; stopped and removed on exit."""
    bindir = postgres_bindir()
    if bindir is None:
        missing("PostgreSQL (initdb) is not installed (Debian: postgresql)")
    assert bindir is not None
    with tempfile.TemporaryDirectory(prefix="capsync-pg-") as directory:
        os.chmod(directory, 0o755)  # the postgres user must reach its directory below
        server = PostgresServer(free_port(), Path(directory) / "pg", bindir)
        server.init()
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server
