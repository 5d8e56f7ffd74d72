"""A private Docker engine for the tests, started with the flags that work unprivileged
enough here (ARCHITECTURE.md, Testing), and a tiny image made from static busybox.

Under CI=true a missing dockerd or busybox fails the tests that need them; on a
developer's machine they are skipped.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

IMAGE = "capsync-test/busybox:1"  # carries a capabilities LABEL, as in the seed's Dockerfile
PLAIN_IMAGE = "capsync-test/plain:1"
LABEL = "worker.capabilities"
IMAGE_LABEL = '{"static_analysis_tools":[{"tool_name":"semgrep"}]}'


@dataclass
class DockerEngine:
    root: Path
    # vfs works everywhere; overlay2 (where the kernel lets root mount overlays) makes
    # image builds fast: vfs copies the whole image for every step.
    storage_driver: str = "vfs"
    process: subprocess.Popen[bytes] | None = None
    _client: docker.DockerClient | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.root}/docker.sock"

    def start(self) -> DockerEngine:
        self.root.mkdir(parents=True, exist_ok=True)
        log = (self.root / "dockerd.log").open("ab")
        self.process = subprocess.Popen(
            [
                "dockerd",
                "--host",
                self.host,
                "--data-root",
                f"{self.root}/data",
                "--exec-root",
                f"{self.root}/exec",
                "--pidfile",
                f"{self.root}/docker.pid",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                f"--storage-driver={self.storage_driver}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._pings():
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"dockerd did not start: {(self.root / 'dockerd.log').read_text()}")

    def kill(self) -> None:
        """SIGKILL the engine and everything it started (containerd and the container
        shims run in process groups of their own), as killing docker.service's cgroup
        would: a survivor holds the engine's state and the next dockerd cannot start."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        subprocess.run(["pkill", "-KILL", "-f", f"{self.root}/"], check=False)
        # Here an orphan is not always reaped, and dockerd takes containerd's zombie for a
        # live containerd; the engine is dead, so its pid file is stale.
        (self.root / "exec" / "containerd" / "containerd.pid").unlink(missing_ok=True)
        self._client = None

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _pings(self) -> bool:
        """GET /_ping on the raw socket (a docker client that fails to connect leaks its
        socket, which the suite's warnings-as-errors would report)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(str(self.root / "docker.sock"))
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return sock.recv(1024).startswith(b"HTTP/1.0 200")
            except OSError:
                return False

    @contextmanager
    def client(self) -> Iterator[docker.DockerClient]:
        """One client per engine run, closed when the engine stops: the objects it returns
        (containers, services) hold on to it."""
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.host, timeout=60)
        yield self._client

    def import_image(self) -> None:
        # A worker that ends on SIGTERM, as real ones do: busybox's sleep as PID 1 ignores
        # it, and every stop of a container or of the engine then waited Docker's 10 s.
        command = """CMD ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]"""
        with self.client() as client:
            for image, changes in (
                (IMAGE, [command, f"LABEL {LABEL}='{IMAGE_LABEL}'"]),
                (PLAIN_IMAGE, [command]),
            ):
                repository, tag = image.split(":")
                client.api.import_image_from_data(
                    _busybox_tar(), repository=repository, tag=tag, changes=changes
                )


def _busybox_tar() -> bytes:
    busybox = shutil.which("busybox")
    assert busybox, "busybox-static is not installed"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for applet in ("sh", "sleep", "true"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return buffer.getvalue()


def require_docker() -> None:
    missing = [tool for tool in ("dockerd", "busybox") if shutil.which(tool) is None]
    if not missing:
        return
    message = f"{', '.join(missing)} not installed (Debian: docker.io, busybox-static)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs a Docker engine: {message}")
    pytest.skip(message)


@contextmanager
def running_engine(storage_driver: str = "vfs") -> Iterator[DockerEngine]:
    """An engine in a directory of its own, outside pytest's temporary tree (dockerd
    leaves root-owned state there that pytest's clean-up cannot always remove)."""
    require_docker()
    root = Path(tempfile.mkdtemp(prefix="capsync-docker-"))
    engine = DockerEngine(root, storage_driver)
    try:
        engine.start()
        engine.import_image()
        yield engine
    finally:
        engine.stop()
        _unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)


def _unmount_under(root: Path) -> None:
    """What the stopped engine left mounted under its directory (overlay2's private bind
    of its data root, a network namespace file), deepest first, so that it can go."""
    mounted = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in sorted((p for p in mounted if p.startswith(f"{root}/")), reverse=True):
        subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    with running_engine() as engine:
        yield engine


@pytest.fixture(scope="session")
def swarm_engine() -> Iterator[DockerEngine]:
    """One engine in swarm mode for the whole session (a swarm engine takes seconds to
    stop); each test removes the services it created. The swarm's ports are free ones,
    so a second suite on the same machine does not collide on 2377 or 4789."""
    with running_engine() as engine, engine.client() as client:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            listen = f"127.0.0.1:{sock.getsockname()[1]}"
        client.swarm.init(
            advertise_addr="127.0.0.1", listen_addr=listen, data_path_port=free_data_path_port()
        )
        try:
            yield engine
        finally:
            client.swarm.leave(force=True)  # the engine then stops at once


def free_data_path_port() -> int:
    """A free UDP port Swarm accepts for VXLAN (1024-49151), not the shared default 4789:
    other sessions' swarm engines run on this host's network too."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port <= 49151:
            return port


@pytest.fixture
def private_engine() -> Iterator[DockerEngine]:
    """An engine of the test's own, for tests that stop it or change its mode."""
    with running_engine() as engine:
        yield engine
