"""capsync's own image, built by config/container/build.sh on a private Docker engine of
this session's (a swarm manager, so that the Swarm tests run on it too), offline.

The base is Debian's Python, made with debootstrap and `docker import` (no registry is
reachable here; SERVICES.md): its root file system is kept as a tarball in a cache
directory per machine, made once under a lock, and imported into each session's engine.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, child_environment
from tests.docker_engine import DockerEngine, free_data_path_port, running_engine
from tests.services import free_port, missing

BASE_IMAGE = "capsync-test/python-base:bookworm"
SUITE = "bookworm"
PACKAGES = "python3,python3-venv,ca-certificates"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"capsync:{VERSION}"  # build.sh's default tag, the one deployment.yaml names


@dataclass
class ImageEngine:
    """The session's engine with the image built on it."""

    engine: DockerEngine
    image: str
    build_log: str

    @property
    def socket(self) -> Path:
        return self.engine.root / "docker.sock"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("CAPSYNC_TEST_CACHE") or f"{base}/capsync-tests")


def base_rootfs() -> Path:
    """The debootstrapped root file system as a tarball, made once per machine: other
    sessions wait on the lock rather than run debootstrap beside it."""
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    tarball = directory / f"python-{SUITE}-minbase.tar"
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists():
            return tarball
        if shutil.which("debootstrap") is None:
            missing("debootstrap (Debian: debootstrap)")
        with tempfile.TemporaryDirectory(dir=directory) as work:
            root = Path(work) / "root"
            subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(root)],
                check=True,
                capture_output=True,
            )
            partial = Path(work) / "rootfs.tar"
            subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True)
            partial.rename(tarball)
    return tarball


def import_base(engine: DockerEngine) -> None:
    with engine.client() as client:
        if any(BASE_IMAGE in image.tags for image in client.images.list()):
            return
        with base_rootfs().open("rb") as data:
            repository, tag = BASE_IMAGE.split(":")
            client.api.import_image_from_data(data, repository=repository, tag=tag)


def run_build(engine: DockerEngine, base: str = BASE_IMAGE) -> subprocess.CompletedProcess[str]:
    """The one command a user runs, on ``engine``, from ``base``."""
    return subprocess.run(
        ["bash", str(ROOT / "config" / "container" / "build.sh")],
        env=child_environment(
            {"DOCKER_HOST": engine.host, "BASE_IMAGE": base, "PYTHON": sys.executable}
        ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def build(engine: DockerEngine) -> str:
    result = run_build(engine)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="session")
def image_engine() -> Iterator[ImageEngine]:
    """A private engine, a swarm manager on free loopback ports, with the image built."""
    with running_engine(storage_driver="overlay2") as engine:
        with engine.client() as client:
            client.swarm.init(
                advertise_addr="127.0.0.1",
                listen_addr=f"127.0.0.1:{free_port()}",
                data_path_port=free_data_path_port(),
            )
        import_base(engine)
        try:
            yield ImageEngine(engine, IMAGE, build(engine))
        finally:
            with engine.client() as client:
                client.swarm.leave(force=True)  # the engine stops at once, not in 40 s
