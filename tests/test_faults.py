"""Fault injection: Consul failing and slow, the Docker engine killed under the daemon,
hostile labels. The daemon must stay up, say what is wrong, delete nothing it should not,
and converge once the fault is gone. Nothing here is timed beyond generous deadlines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.consul_target import ConsulTarget
from tests.daemon_process import Daemon, wait_until
from tests.docker_engine import IMAGE, LABEL, DockerEngine
from tests.doubles.consul import ConsulDouble
from tests.test_sync_contract import EXAMPLES


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    directory = tmp_path / "fleet"
    shutil.copytree(EXAMPLES, directory)
    return directory


def catalog_ids(target: ConsulTarget) -> list[str]:
    return sorted(
        s["ServiceID"]
        for s in target.get(f"/v1/catalog/service/{target.service}")
        if s["Node"] == target.node
    )


def test_consul_errors_then_timeouts_then_back(fleet: Path):
    with ConsulDouble() as double:
        target = ConsulTarget(double.address, double)
        proc = Daemon(
            ["--owner", target.owner, "--source", f"file:{fleet}", "--interval", "1s"],
            env=target.env(CAPSYNC_CONSUL__TIMEOUT="1"),
        ).started()
        try:
            wait_until(lambda: proc.get("/readyz").status_code == 200, 10)

            double.fail_requests(500, "rpc error making call: No cluster leader")
            wait_until(lambda: proc.get("/readyz").status_code == 503, 10)
            assert "No cluster leader" in proc.get("/readyz").text
            (fleet / "added.json").write_text('{"id": "added-while-failing"}')
            (fleet / "go-worker-1.yaml").unlink()

            double.clear_faults()
            double.delay_requests(2.0)  # longer than the client's 1 s time-out
            wait_until(lambda: "did not answer" in proc.get("/readyz").text, 15)
            assert proc.proc.poll() is None and proc.get("/healthz").status_code == 200

            double.clear_faults()
            wait_until(lambda: proc.get("/readyz").status_code == 200, 15)
            expected = sorted(
                {p.stem for p in EXAMPLES.iterdir()} - {"go-worker-1"} | {"added-while-failing"}
            )
            wait_until(lambda: catalog_ids(target) == expected, 10)
            assert len(catalog_ids(target)) == len(set(catalog_ids(target)))
            metrics = proc.get("/metrics").text
            assert 'capsync_cycles_total{result="failure"}' in metrics
        finally:
            assert proc.stop() == 0


def test_docker_engine_killed_under_the_daemon_deletes_nothing(
    consul: ConsulTarget, private_engine: DockerEngine
):
    with private_engine.client() as client:
        client.containers.run(
            IMAGE,
            name="steady",
            detach=True,
            labels={LABEL: '{"id": "s"}'},
            restart_policy={"Name": "always"},
        )
    proc = Daemon(
        ["--owner", consul.owner, "--source", "docker", "--interval", "1s"],
        env=consul.env(DOCKER_HOST=private_engine.host),
    ).started()
    try:
        wait_until(lambda: "s" in consul.services(), 10)
        private_engine.kill()  # SIGKILL: no clean shutdown
        proc.wait_for(lambda line: "event=source_failed source=docker" in line, 15)
        for _ in range(3):  # several failed cycles: the entry stays
            proc.wait_for(lambda line: "event=cycle" in line and "ok=False" in line, 10)
            assert "s" in consul.services()
        assert proc.status()["sources"]["docker"]["ok"] is False

        private_engine.start()
        with private_engine.client() as client:
            client.containers.run(
                IMAGE, name="after", detach=True, labels={LABEL: '{"id": "after-restart"}'}
            )
        wait_until(lambda: {"s", "after-restart"} <= set(consul.services()), 30)
        wait_until(lambda: proc.status()["sources"]["docker"]["ok"], 10)
    finally:
        assert proc.stop() == 0


HOSTILE = {
    "huge": (
        '{"id": "huge", "metadata": {"pad": "' + "x" * (1024 * 1024) + '"}}',
        "at most 65536 bytes",
    ),
    "deep": ("[" * 10_000 + "]" * 10_000, "nested too deeply"),
    "nul": ('{"id": "a\x00b"}', "malformed JSON"),
    "digits": ('{"id": ' + "9" * 10_000 + "}", "a number is too long"),
}


def test_hostile_labels_one_clear_error_each(
    consul: ConsulTarget, docker_engine: DockerEngine, tmp_path: Path
):
    files = tmp_path / "files"
    files.mkdir()
    (files / "latin1.json").write_bytes(b'{"id": "caf\xe9"}')  # invalid UTF-8
    (files / "good.json").write_text('{"id": "good-file"}')
    names = [f"hostile-{name}" for name in HOSTILE]
    with docker_engine.client() as client:
        for (label, _), container in zip(HOSTILE.values(), names, strict=True):
            client.containers.run(IMAGE, name=container, detach=True, labels={LABEL: label})
        client.containers.run(
            IMAGE, name="calm", detach=True, labels={LABEL: json.dumps({"id": "calm"})}
        )
    proc = Daemon(
        [
            "--owner",
            consul.owner,
            "--source",
            "docker",
            "--source",
            f"file:{files}",
            "--interval",
            "300s",
        ],
        env=consul.env(DOCKER_HOST=docker_engine.host),
    )
    try:
        proc.started()
        wait_until(lambda: {"calm", "good-file"} <= set(consul.services()), 15)
        cycle = proc.wait_for(lambda line: "event=cycle" in line)
        assert "5 invalid" in cycle
        problems = [line for line in proc.lines if "event=invalid_declaration" in line]
        for (_, (_, message)), container in zip(HOSTILE.items(), names, strict=True):
            mine = [line for line in problems if f"/{container} " in line]
            assert len(mine) == 1 and message in mine[0], (container, mine)
        assert sum("latin1.json" in line and "not valid UTF-8" in line for line in problems) == 1
        assert all(len(line) < 2000 for line in proc.lines)  # no 1 MiB echo in the log
        assert proc.get("/healthz").status_code == 200
        assert proc.status()["last_cycle"]["ok"] is True
    finally:
        assert proc.stop() == 0
        with docker_engine.client() as client:
            for container in [*names, "calm"]:
                client.containers.get(container).remove(force=True)
