"""The docker and swarm sources on a real engine, synced into Consul through the CLI."""

from __future__ import annotations

import threading
import time

from discovery.sources.docker import DockerSource
from tests.conftest import SEED_LABEL, run_cli
from tests.consul_target import ConsulTarget
from tests.docker_engine import IMAGE, PLAIN_IMAGE, DockerEngine

LABEL = "worker.capabilities"


def sync(target: ConsulTarget, engine: DockerEngine, *sources: str):
    args = [arg for source in sources for arg in ("--source", source)]
    return run_cli(
        "run", "--once", "--owner", target.owner, *args, env=target.env(DOCKER_HOST=engine.host)
    )


def start(
    engine: DockerEngine,
    name: str,
    labels: dict[str, str] | None = None,
    image: str = IMAGE,
    **kwargs,
):
    with engine.client() as client:
        return client.containers.run(image, name=name, labels=labels or {}, detach=True, **kwargs)


def remove(engine: DockerEngine, *names: str) -> None:
    with engine.client() as client:
        for name in names:
            client.containers.get(name).remove(force=True)


def test_containers_appear_and_leave(consul: ConsulTarget, docker_engine: DockerEngine):
    seed = start(docker_engine, "seed-label", {LABEL: SEED_LABEL})
    start(docker_engine, "from-image")  # the image's LABEL declares semgrep, no id
    stopped = start(docker_engine, "stopped", {LABEL: '{"id": "never"}'})
    stopped.stop(timeout=0)
    try:
        result = sync(consul, docker_engine, "docker")
        assert result.returncode == 0, result.stderr
        services = consul.services()
        assert set(services) == {"rust-worker", "from-image"}
        rust = services["rust-worker"]
        assert rust["ServiceTags"] == ["clippy"]
        assert rust["ServiceMeta"]["static_analysis"] == "clippy!"
        assert rust["ServiceMeta"]["capsync-source"] == "docker"
        assert rust["ServiceMeta"]["capsync-ref"] == f"{seed.id[:12]}/seed-label"
        assert services["from-image"]["ServiceTags"] == ["semgrep"]

        seed.stop(timeout=0)
        result = sync(consul, docker_engine, "docker")
        assert "1 deleted" in result.stdout
        assert set(consul.services()) == {"from-image"}
    finally:
        remove(docker_engine, "seed-label", "from-image", "stopped")


def test_malformed_label_reported_by_container_others_sync(
    consul: ConsulTarget, docker_engine: DockerEngine
):
    start(docker_engine, "broken-json", {LABEL: '{"id": "x",'})
    start(docker_engine, "bad-field", {LABEL: '{"id": "y", "flags": {"f": "yes"}}'})
    start(docker_engine, "good-one", {LABEL: '{"id": "good"}'})
    try:
        result = sync(consul, docker_engine, "docker")
        assert result.returncode == 0, result.stderr
        lines = result.stderr.splitlines()
        assert any("/broken-json" in line and "malformed JSON" in line for line in lines)
        assert any("/bad-field" in line and "field=flags.f" in line for line in lines)
        assert set(consul.services()) >= {"good"} and "y" not in consul.services()
    finally:
        remove(docker_engine, "broken-json", "bad-field", "good-one")


def test_engine_down_deletes_nothing_then_recovers(
    consul: ConsulTarget, private_engine: DockerEngine
):
    start(
        private_engine, "survivor", {LABEL: '{"id": "survivor"}'}, restart_policy={"Name": "always"}
    )
    assert sync(consul, private_engine, "docker").returncode == 0
    assert "survivor" in consul.services()

    private_engine.stop()
    result = sync(consul, private_engine, "docker")
    assert result.returncode == 1
    assert "event=source_failed source=docker" in result.stderr
    assert "Traceback" not in result.stderr
    assert "survivor" in consul.services()

    private_engine.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = sync(consul, private_engine, "docker")
        if result.returncode == 0 and "1 unchanged" in result.stdout:
            break
        time.sleep(0.5)
    assert result.returncode == 0 and "1 unchanged" in result.stdout, result.stderr


def test_swarm_service_appears_and_leaves(consul: ConsulTarget, swarm_engine: DockerEngine):
    with swarm_engine.client() as client:
        service = client.services.create(
            IMAGE, name="fuzzers", labels={LABEL: '{"fuzzing_tools": [{"tool_name": "afl++"}]}'}
        )
        try:
            result = sync(consul, swarm_engine, "swarm")
            assert result.returncode == 0, result.stderr
            fuzzers = consul.services()["fuzzers"]
            assert fuzzers["ServiceTags"] == ["afl++"]
            assert fuzzers["ServiceMeta"]["capsync-source"] == "swarm"
        finally:
            service.remove()
        result = sync(consul, swarm_engine, "swarm")
        assert "1 deleted" in result.stdout and consul.services() == {}


def test_swarm_on_a_plain_engine_is_a_source_failure(
    consul: ConsulTarget, docker_engine: DockerEngine
):
    result = sync(consul, docker_engine, "swarm")
    assert result.returncode == 1
    assert "event=source_failed source=swarm" in result.stderr
    assert "not a swarm manager" in result.stderr


def test_events_notify_and_survive_an_engine_restart(private_engine: DockerEngine):
    source = DockerSource(base_url=private_engine.host)
    seen: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(target=source.watch, args=(seen.append, stop))
    watcher.start()
    try:
        time.sleep(0.5)
        start(private_engine, "evented", {LABEL: '{"id": "e"}'})
        start(private_engine, "unlabelled", image=PLAIN_IMAGE)
        assert _wait_for(lambda: any("evented start" in s for s in seen)), seen
        assert not any("unlabelled" in s for s in seen)

        private_engine.stop()  # the stream breaks; the watch retries with backoff
        private_engine.start()
        remove(private_engine, "evented")
        assert _wait_for(lambda: any("evented destroy" in s for s in seen), 40), seen
    finally:
        stop.set()
        watcher.join(5)
    assert not watcher.is_alive()


def _wait_for(predicate, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False
