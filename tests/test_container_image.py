"""capsync's image on the real Docker engine: built from the checkout with
config/container/build.sh, then run as its users run it (README, "Run as a container"):
the quick start, the daemon beside the containers it registers (registrator's use case)
with the socket read-only and a read-only root, and the same as a Swarm service."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker.errors
import docker.types
import pytest

from tests.consul_target import ConsulTarget
from tests.container_image import IMAGE, VERSION, ImageEngine, run_build
from tests.docker_engine import IMAGE as WORKER_IMAGE
from tests.docker_engine import LABEL, PLAIN_IMAGE
from tests.services import free_port

SOCKET = "/var/run/docker.sock"
STATE = "/var/lib/capsync"
# The image's HEALTHCHECK as shipped (its command, timeout, retries), checked every second
# rather than every 30 s so that the test sees the first answer soon.
EVERY_SECOND = 1_000_000_000


def wait_until(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def daemon_environment(consul: ConsulTarget, listen: str) -> dict[str, str]:
    return {
        "CONSUL_HTTP_ADDR": consul.address,
        "CAPSYNC_DAEMON__LISTEN": listen,
        "CAPSYNC_DAEMON__MIN_GAP": "0.2s",
        "CAPSYNC_REGISTRY__OWNER": consul.owner,
    }


def socket_group(images: ImageEngine) -> str:
    """The group that owns the engine's socket: the README's `--group-add`."""
    return str(os.stat(images.socket).st_gid)


def settled_health(container: Any) -> str:
    """Docker's verdict once it has one: healthy or unhealthy ('' while starting)."""
    container.reload()
    status = str(container.attrs["State"].get("Health", {}).get("Status", "none"))
    return status if status in ("healthy", "unhealthy") else ""


@pytest.fixture
def workers(image_engine: ImageEngine) -> Iterator[Callable[..., Any]]:
    """Labelled containers started beside capsync on the same engine; removed after."""
    started: list[Any] = []

    def start(name: str, declaration: str) -> Any:
        with image_engine.engine.client() as client:
            container = client.containers.run(
                WORKER_IMAGE, name=name, labels={LABEL: declaration}, detach=True
            )
        started.append(container)
        return container

    yield start
    for container in started:
        container.remove(force=True)


def test_the_image_is_labelled_non_root_and_carries_no_build_tools(
    image_engine: ImageEngine,
) -> None:
    with image_engine.engine.client() as client:
        image = client.images.get(IMAGE)
        config = image.attrs["Config"]
        labels = config["Labels"]
        assert labels["org.opencontainers.image.version"] == VERSION
        assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
        assert labels["org.opencontainers.image.source"]
        assert config["User"] == "65532:65532"
        assert STATE in config["Volumes"]
        assert config["Healthcheck"]["Test"][0] == "CMD"
        found = client.containers.run(
            IMAGE,
            entrypoint=["sh", "-c"],
            command=[
                "id -u; command -v gcc cc make pip pip3 curl;"
                " find /opt/capsync /tmp /var/lib/capsync -name '*.whl';"
                " find / -xdev -path '*/.cache/pip' 2>/dev/null; exit 0"
            ],
            remove=True,
        )
    assert found.decode().split() == ["65532"]


def test_the_quick_start_runs_once_in_a_read_only_container(image_engine: ImageEngine) -> None:
    with image_engine.engine.client() as client:
        state = client.volumes.create()
        try:

            def capsync(*args: str) -> str:
                output = client.containers.run(
                    IMAGE,
                    list(args),
                    read_only=True,
                    volumes={state.name: {"bind": STATE, "mode": "rw"}},
                    # Fixed: the default owner and writer, the host name, would be the
                    # container's id, new in every container.
                    hostname="quickstart",
                    remove=True,
                )
                return str(output.decode())

            quickstart = ["--config", "config/examples/quickstart.toml"]
            first = capsync("run", "--once", *quickstart)
            assert "sync: 9 created, 0 updated, 0 deleted, 0 unchanged" in first, first
            # The state volume kept the registry: nothing to write the second time.
            again = capsync("run", "--once", *quickstart)
            assert "sync: 0 created, 0 updated, 0 deleted, 9 unchanged" in again, again
            clippy = ["--category", "static_analysis", "--tool", "clippy"]
            found = capsync("find", *quickstart, *clippy)
            assert "rust-worker" in found, found
        finally:
            state.remove(force=True)


def test_the_daemon_registers_containers_beside_it_and_stops_cleanly(
    image_engine: ImageEngine, consul: ConsulTarget, workers: Callable[..., Any]
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    with image_engine.engine.client() as client:
        daemon = client.containers.run(
            IMAGE,
            ["run", "--source", "docker"],
            detach=True,
            read_only=True,
            network_mode="host",  # the engine has no bridge; the Consul double is on loopback
            volumes={str(image_engine.socket): {"bind": SOCKET, "mode": "ro"}},
            group_add=[socket_group(image_engine)],
            environment=daemon_environment(consul, listen),
            healthcheck={"interval": EVERY_SECOND},
        )
    try:
        workers(
            "rust-builder",
            '{"id": "rust-worker", "static_analysis_tools": [{"tool_name": "clippy"}]}',
        )
        fuzzer = workers("fuzzer", '{"fuzzing_tools": [{"tool_name": "afl++"}]}')
        services = wait_until(
            "both workers in Consul", lambda: len(consul.services()) == 2 and consul.services()
        )
        assert services["rust-worker"]["ServiceTags"] == ["clippy"]
        assert services["fuzzer"]["ServiceMeta"]["capsync-source"] == "docker"

        fuzzer.stop(timeout=0)
        wait_until("the stopped worker gone", lambda: set(consul.services()) == {"rust-worker"})
        assert wait_until("a health verdict", lambda: settled_health(daemon)) == "healthy"

        # docker stop: SIGTERM, then SIGKILL after 5 s (exit 137); 0 means a clean stop in time.
        daemon.stop(timeout=5)
        daemon.reload()
        assert daemon.attrs["State"]["ExitCode"] == 0, daemon.logs().decode()[-2000:]
        assert "event=stopping" in daemon.logs().decode()
    finally:
        daemon.remove(force=True)


def test_the_daemon_runs_as_a_swarm_service_on_a_manager(
    image_engine: ImageEngine, consul: ConsulTarget
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    with image_engine.engine.client() as client:
        capsync = client.services.create(
            IMAGE,
            args=["run", "--source", "swarm"],
            name="capsync",
            hostname="capsync-swarm",
            constraints=["node.role==manager"],
            networks=["host"],
            read_only=True,
            mounts=[f"{image_engine.socket}:{SOCKET}:ro"],
            groups=[socket_group(image_engine)],
            env=[f"{k}={v}" for k, v in daemon_environment(consul, listen).items()],
            healthcheck=docker.types.Healthcheck(interval=EVERY_SECOND),
            stop_grace_period=5_000_000_000,
        )
        fuzzers = client.services.create(
            WORKER_IMAGE,
            name="fuzzers",
            labels={LABEL: '{"fuzzing_tools": [{"tool_name": "afl++"}]}'},
        )
        try:
            services = wait_until("the service in Consul", consul.services)
            assert services["fuzzers"]["ServiceTags"] == ["afl++"]
            assert services["fuzzers"]["ServiceMeta"]["capsync-source"] == "swarm"

            def task() -> Any:
                found = client.containers.list(
                    all=True, filters={"label": "com.docker.swarm.service.name=capsync"}
                )
                return found[0] if found else None

            container = wait_until("capsync's task", task)
            verdict = wait_until("a health verdict", lambda: settled_health(container))
            assert verdict == "healthy"

            fuzzers.remove()
            wait_until("the removed service gone", lambda: consul.services() == {})

            capsync.scale(0)  # the task is stopped as `docker stop` would, grace 5 s
            wait_until("the task stopped", lambda: not _running(container))
            assert container.attrs["State"]["ExitCode"] == 0
        finally:
            for service in (capsync, fuzzers):
                with contextlib.suppress(docker.errors.NotFound):
                    service.remove()


def _running(container: Any) -> bool:
    container.reload()
    return bool(container.attrs["State"]["Running"])


@pytest.mark.parametrize(
    ("listen", "says"),
    [
        ("off", "daemon.listen is 'off': no /healthz to check"),
        ("127.0.0.1:0", "a random port cannot be checked"),
        ("0.0.0.0:9", "http://127.0.0.1:9/healthz: <urlopen error [Errno 111]"),
        ("[::]:9", "http://[::1]:9/healthz: <urlopen error"),
        ("nowhere.invalid:9469", "http://nowhere.invalid:9469/healthz: <urlopen error"),
        ("bogus", "must be HOST:PORT"),
    ],
)
def test_the_health_check_fails_saying_why(
    image_engine: ImageEngine, listen: str, says: str
) -> None:
    """Unhealthy, with the reason in Docker's health log, when nothing answers where the
    configuration says the daemon listens (or it listens nowhere one can ask)."""
    with image_engine.engine.client() as client:
        check = client.containers.run(
            IMAGE,
            ["/opt/capsync/healthcheck.py"],
            entrypoint=["/opt/capsync/bin/python"],
            environment={"CAPSYNC_DAEMON__LISTEN": listen},
            detach=True,
        )
        try:
            assert check.wait(timeout=60)["StatusCode"] == 1
            assert says in check.logs().decode()
        finally:
            check.remove(force=True)


def test_a_base_without_python_is_refused_before_anything_is_built(
    image_engine: ImageEngine,
) -> None:
    result = run_build(image_engine.engine, base=PLAIN_IMAGE)  # static busybox only
    assert result.returncode == 1
    assert f"build.sh: base image {PLAIN_IMAGE}: no python3 in it" in result.stderr
