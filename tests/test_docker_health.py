"""A container's HEALTHCHECK on the real engine, through Docker's health_status events,
into the Consul check of its entry."""

from __future__ import annotations

from typing import Any

from discovery.sources.docker import DockerSource
from discovery.sources.swarm import SwarmSource
from tests.consul_target import ConsulTarget
from tests.daemon_process import Daemon, wait_until
from tests.docker_engine import IMAGE, DockerEngine
from tests.test_docker_source import LABEL, remove, start

SECOND = 1_000_000_000  # Docker's durations are nanoseconds
PROBE = {
    "test": ["CMD", "/bin/sh", "-c", "test ! -e /sick"],
    "interval": SECOND // 2,
    "timeout": 2 * SECOND,
    "retries": 1,
}


def probed(engine: DockerEngine, name: str) -> Any:
    return start(engine, name, {LABEL: f'{{"id": "{name}"}}'}, healthcheck=PROBE)


def sicken(container: Any, sick: bool) -> None:
    command = ": > /sick" if sick else "/bin/busybox rm -f /sick"
    assert container.exec_run(["/bin/sh", "-c", command]).exit_code == 0


def health_of(source: DockerSource | SwarmSource) -> dict[str, tuple[str, str]]:
    return {
        d.ref.split("/", 1)[1]: (d.health.status, d.health.output)
        for d in source.list().declarations
    }


def test_the_listing_carries_each_container_s_probe(docker_engine: DockerEngine) -> None:
    sick = probed(docker_engine, "hc-sick")
    plain = start(docker_engine, "hc-plain", {LABEL: '{"id": "hc-plain"}'})
    source = DockerSource(base_url=docker_engine.host)
    try:
        sicken(sick, True)
        wait_until(lambda: health_of(source)["hc-sick"][0] == "critical", 30)
        _, output = health_of(source)["hc-sick"]
        assert output.startswith("docker: unhealthy (")
        assert "failed probes)" in output
        assert health_of(source)["hc-plain"] == ("passing", "")  # no HEALTHCHECK: passing
        sicken(sick, False)
        wait_until(lambda: health_of(source)["hc-sick"] == ("passing", ""), 30)
    finally:
        source.close()
        remove(docker_engine, sick.name, plain.name)


def test_a_failing_healthcheck_goes_critical_in_consul_and_back(
    consul: ConsulTarget, docker_engine: DockerEngine
) -> None:
    container = probed(docker_engine, "hc-worker")
    # A long interval: only the engine's events can bring the changes in time.
    proc = Daemon(
        ["--owner", consul.owner, "--source", "docker", "--interval", "3600s"],
        env=consul.env(DOCKER_HOST=docker_engine.host, CAPSYNC_DAEMON__HEALTH_MIN_TIME="0"),
    )

    def check() -> tuple[str, str]:
        rows = consul.get(f"/v1/health/node/{consul.node}")
        found = [(r["Status"], r["Output"]) for r in rows if r["CheckID"] == "capsync:hc-worker"]
        return found[0] if found else ("", "")

    def passing() -> list[str]:
        rows = consul.get("/v1/health/service/worker", passing="")
        return [r["Service"]["ID"] for r in rows if r["Node"]["Node"] == consul.node]

    try:
        proc.started()
        wait_until(lambda: check()[0] == "passing", 30)
        assert passing() == ["hc-worker"]
        sicken(container, True)
        wait_until(lambda: check()[0] == "critical", 30)
        assert check()[1].startswith("docker: unhealthy (")
        assert passing() == []
        sicken(container, False)
        wait_until(lambda: check()[0] == "passing", 30)
        assert passing() == ["hc-worker"]
        assert "health_status" in "\n".join(proc.lines)
    finally:
        proc.stop()
        remove(docker_engine, container.name)


def test_a_swarm_service_s_health_is_its_running_tasks(swarm_engine: DockerEngine) -> None:
    source = SwarmSource(base_url=swarm_engine.host)
    with swarm_engine.client() as client:
        good = client.services.create(IMAGE, name="sw-ok", labels={LABEL: '{"id": "sw-ok"}'})
        bad = client.services.create(
            IMAGE,
            name="sw-bad",
            labels={LABEL: '{"id": "sw-bad"}'},
            constraints=["node.labels.nowhere == true"],  # its task is never placed
        )
        try:
            wait_until(lambda: health_of(source).get("sw-ok", ("",))[0] == "passing", 60)
            assert health_of(source)["sw-ok"] == ("passing", "")
            assert health_of(source)["sw-bad"] == ("critical", "swarm: 0/1 tasks running")
        finally:
            good.remove()
            bad.remove()
            source.close()
