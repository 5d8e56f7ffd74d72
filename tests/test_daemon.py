"""`capsync run` as a service: systemd notify, events, HTTP endpoints, reload, shutdown,
leader election and secrets, observed from outside (processes, sockets, HTTP)."""

from __future__ import annotations

import itertools
import json
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.consul_target import ConsulTarget
from tests.daemon_process import Daemon, NotifySocket, json_lines, wait_until
from tests.doubles.consul import ConsulDouble
from tests.test_sync_contract import EXAMPLES


def daemon(target: ConsulTarget, *args: str, env: dict[str, str] | None = None) -> Daemon:
    return Daemon(
        ["--owner", target.owner, "--service", target.service, *args], env=target.env(**(env or {}))
    )


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    directory = tmp_path / "fleet"
    shutil.copytree(EXAMPLES, directory)
    return directory


def test_notify_ready_watchdog_status_and_clean_stop(
    consul: ConsulTarget, fleet: Path, tmp_path: Path
):
    notify = NotifySocket(tmp_path)
    proc = daemon(
        consul,
        "--source",
        f"file:{fleet}",
        "--interval",
        "300s",
        env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"},
    )
    try:
        proc.started()
        wait_until(lambda: sum(line == "WATCHDOG=1" for line in notify.lines()) >= 4, 5)
        wait_until(lambda: any(m.startswith("STATUS=sync: 9 created") for m in notify.lines()))
        assert notify.lines().index("READY=1") < notify.lines().index("WATCHDOG=1")
        pings = [t for t, line in notify.messages if line == "WATCHDOG=1"]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert max(gaps) < 1.0  # at least every WATCHDOG_USEC/2, with slack
        started = time.monotonic()
        assert proc.stop() == 0
        assert time.monotonic() - started < 5
        assert "STOPPING=1" in notify.lines()
    finally:
        notify.close()
        if proc.proc.poll() is None:
            proc.kill()


def test_new_file_reaches_registry_through_events(consul: ConsulTarget, fleet: Path):
    proc = daemon(consul, "--source", f"file:{fleet}", "--interval", "300s").started()
    try:
        wait_until(lambda: len(consul.services()) == 9)
        added = time.monotonic()
        (fleet / "late.json").write_text('{"id": "late-worker"}')
        wait_until(lambda: "late-worker" in consul.services(), 3, 0.05)
        assert time.monotonic() - added < 3
        proc.wait_for(lambda line: "event=cycle" in line and "event: file" in line)
    finally:
        assert proc.stop() == 0


def test_readyz_follows_consul_and_registry_converges(fleet: Path, tmp_path: Path):
    double = ConsulDouble().start()
    port = double.port
    target = ConsulTarget(double.address, double)
    proc = daemon(target, "--source", f"file:{fleet}", "--interval", "1s").started()
    try:
        wait_until(lambda: proc.get("/readyz").status_code == 200)
        double.stop()
        wait_until(lambda: proc.get("/readyz").status_code == 503, 10)
        assert "cannot reach Consul" in proc.get("/readyz").text
        (fleet / "while-down.json").write_text('{"id": "while-down"}')
        (fleet / "go-worker-1.yaml").unlink()
        double = ConsulDouble(port=port).start()  # back, empty: a restarted dev agent
        target = ConsulTarget(double.address, double, owner=target.owner)
        wait_until(lambda: proc.get("/readyz").status_code == 200, 10)
        services = wait_until(lambda: (s := target.services()) and len(s) == 9 and s, 10)
        assert "while-down" in services and "go-worker-1" not in services
        assert proc.status()["last_cycle"]["ok"] is True
    finally:
        assert proc.stop() == 0
        double.stop()


def test_sighup_reload_takes_the_new_service(consul: ConsulTarget, fleet: Path, tmp_path: Path):
    """Ownership is owner and service: after the reload the old service's entries are
    another service's, kept as they are, and the same ids are conflicts, never moved."""
    config = tmp_path / "capsync.toml"
    config.write_text(
        f'[registry]\nservice = "worker"\nowner = "{consul.owner}"\n'
        f'[[sources]]\ntype = "file"\npath = "{fleet}"\n'
    )
    notify = NotifySocket(tmp_path)
    proc = Daemon(
        ["--config", str(config), "--interval", "300s"], env=consul.env(NOTIFY_SOCKET=notify.path)
    ).started()
    try:
        wait_until(lambda: len(consul.services()) == 9)
        config.write_text(config.read_text().replace('"worker"', '"analysis"'))
        proc.signal(signal.SIGHUP)
        renamed = ConsulTarget(
            consul.address, consul.double, owner=consul.owner, service="analysis"
        )
        proc.wait_for(lambda line: "event=conflict" in line and "another writer" in line, 10)
        assert len(consul.services()) == 9 and not renamed.services()
        assert "RELOADING=1" in notify.lines()
        assert notify.lines()[notify.lines().index("RELOADING=1") :].count("READY=1") == 1

        config.write_text("[registry]\npolicy = 'nonsense'\n")
        proc.signal(signal.SIGHUP)
        line = proc.wait_for(lambda line: "event=reload_failed" in line)
        assert "registry.policy" in line and "keeping the running configuration" in line
        (fleet / "after.json").write_text('{"id": "after-bad-reload"}')
        wait_until(lambda: "after-bad-reload" in renamed.services(), 5)
    finally:
        notify.close()
        assert proc.stop() == 0


def test_sigterm_mid_apply_then_restart_converges_without_duplicates(tmp_path: Path):
    fleet = tmp_path / "big"
    fleet.mkdir()
    for i in range(3000):
        (fleet / f"w{i}.json").write_text(json.dumps({"id": f"w-{i}"}))
    with ConsulDouble() as double:
        double.delay_requests(0.05)  # slow writes, so SIGTERM lands mid-apply
        target = ConsulTarget(double.address, double)
        proc = daemon(target, "--source", f"file:{fleet}", "--interval", "300s").started()
        wait_until(lambda: double.count("PUT", "/v1/txn") >= 2, 20)
        started = time.monotonic()
        assert proc.stop() == 0
        assert time.monotonic() - started < 5
        assert 0 < len(target.services()) < 3000
        double.clear_faults()
        again = daemon(target, "--source", f"file:{fleet}", "--interval", "300s").started()
        wait_until(lambda: len(target.services()) == 3000, 30)
        assert again.stop() == 0
        ids = [s["ServiceID"] for s in double_services(target)]
        assert len(ids) == len(set(ids)) == 3000


def double_services(target: ConsulTarget) -> list[dict]:
    return [
        s for s in target.get(f"/v1/catalog/service/{target.service}") if s["Node"] == target.node
    ]


def test_metrics_and_status(consul: ConsulTarget, fleet: Path):
    (fleet / "broken.json").write_text("{")
    proc = daemon(consul, "--source", f"file:{fleet}", "--interval", "300s").started()
    try:
        wait_until(lambda: proc.status()["last_cycle"])
        metrics = proc.get("/metrics").text
        for name in (
            "capsync_cycle_duration_seconds_count",
            "capsync_last_success_timestamp",
            'capsync_entries{source="file"} 9.0',
            'capsync_invalid_declarations{source="file"} 1.0',
            'capsync_source_up{source="file"} 1.0',
            "capsync_registry_operations_total",
            "capsync_registry_errors_total",
            "capsync_deletions_held",
            "capsync_leader 1.0",
            "capsync_source_errors_total",
        ):
            assert name in metrics, name
        status = proc.status()
        assert status["sources"]["file"]["ok"] is True
        assert status["sources"]["file"]["invalid"] == 1
        assert status["last_cycle"]["plan"]["summary"]["create"] == 9
        assert proc.get("/healthz").status_code == 200
        assert proc.get("/nope").status_code == 404
    finally:
        assert proc.stop() == 0


def test_json_logs_and_the_token_never_shows(fleet: Path, tmp_path: Path):
    secret = "tok-5ecret-aaaa-bbbb"
    with ConsulDouble(acl_token=secret) as double:
        target = ConsulTarget(double.address, double, token=secret)
        token_file = tmp_path / "token"
        token_file.write_text(secret)
        proc = daemon(
            target,
            "--source",
            f"file:{fleet}",
            "--interval",
            "300s",
            "--log-format",
            "json",
            env={"CONSUL_HTTP_TOKEN_FILE": str(token_file)},
        ).started()
        try:
            wait_until(lambda: len(target.services()) == 9)
            exposed = proc.get("/status").text + proc.get("/metrics").text
        finally:
            assert proc.stop() == 0
        events = json_lines(proc.lines)
        assert {e["event"] for e in events} >= {"started", "cycle", "stopping"}
        assert all({"ts", "level", "event"} <= set(e) for e in events)
        assert len(events) == len(proc.lines)  # one JSON object per line, nothing else
        assert secret not in "\n".join(proc.lines) + exposed
        assert secret not in " ".join(proc.proc.args)
        # Wrong token: the failure is reported, the token is not.
        token_file.write_text("wrong-" + secret)
        bad = daemon(
            target,
            "--source",
            f"file:{fleet}",
            "--interval",
            "300s",
            env={"CONSUL_HTTP_TOKEN_FILE": str(token_file)},
        ).started()
        try:
            bad.wait_for(lambda line: "event=registry_failed" in line and "ACL not found" in line)
        finally:
            assert bad.stop() == 0
        assert secret not in "\n".join(bad.lines)


def test_leader_election_one_writer_and_takeover(fleet: Path):
    with ConsulDouble() as double:
        target = ConsulTarget(double.address, double)
        args = ("--source", f"file:{fleet}", "--interval", "1s")
        env = {"CAPSYNC_DAEMON__LEADER_ELECTION": "true", "CAPSYNC_DAEMON__SESSION_TTL": "10s"}
        first = daemon(target, *args, env=env).started()
        wait_until(lambda: first.status()["leader"], 10)
        second = daemon(target, *args, env=env).started()
        try:
            wait_until(lambda: len(target.services()) == 9)
            wait_until(lambda: second.status()["last_cycle"], 10)
            assert second.status()["leader"] is False
            assert second.status()["last_cycle"]["dry_run"] is True
            assert "capsync_leader 0.0" in second.get("/metrics").text
            first.kill()  # SIGKILL: no release, the session must expire
            killed = time.monotonic()
            (fleet / "after-failover.json").write_text('{"id": "after-failover"}')
            wait_until(lambda: "after-failover" in target.services(), 25, 0.2)
            # Consul invalidates a session up to 2 x TTL after its last renewal; the
            # follower wakes on the lock key at once and writes within about a second.
            assert time.monotonic() - killed <= 2 * 10 + 1.5
            assert second.status()["leader"] is True
        finally:
            second.stop()


def test_leader_that_loses_its_lock_stops_writing(fleet: Path):
    with ConsulDouble() as double:
        target = ConsulTarget(double.address, double)
        args = ("--source", f"file:{fleet}", "--interval", "1s")
        env = {"CAPSYNC_DAEMON__LEADER_ELECTION": "true", "CAPSYNC_DAEMON__SESSION_TTL": "10s"}
        daemons = [daemon(target, *args, env=env).started() for _ in range(2)]
        try:
            leaders = wait_until(lambda: [d for d in daemons if d.status()["leader"]], 10)
            assert len(leaders) == 1
            lock = target.get(f"/v1/kv/capsync/{target.owner}/leader")[0]
            double.expire_session(lock["Session"])  # as if its TTL ran out
            leaders[0].wait_for(
                lambda line: "event=leadership" in line and "leader=False" in line, 10
            )
            wait_until(lambda: sum(d.status()["leader"] for d in daemons) == 1, 10)
            (fleet / "after-loss.json").write_text('{"id": "after-loss"}')
            wait_until(lambda: "after-loss" in target.services(), 10)
            holder = target.get(f"/v1/kv/capsync/{target.owner}/leader")[0]["Session"]
            assert holder != lock["Session"]
        finally:
            for proc in daemons:
                assert proc.stop() == 0
