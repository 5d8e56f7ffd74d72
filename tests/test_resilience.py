"""The daemon never dies of its input and repairs itself fast: the unexpected is isolated,
failed cycles are retried with backoff, reads are bounded, errors are one clear line."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from config.errors import RegistryError
from daemon.cycle import Syncer
from daemon.registry.ownership import Ownership
from daemon.registry.sqlite import SqliteRegistry
from daemon.registry_sync import RegistrySync, SyncOptions
from daemon.retry import Backoff
from daemon.trigger import Trigger
from discovery.sources.base import Listing
from discovery.sources.file import FileSource
from tests.conftest import ROOT, child_environment, run_cli
from tests.consul_target import ConsulTarget
from tests.daemon_process import Daemon, wait_until
from tests.doubles.consul import ConsulDouble
from tests.fake_clock import Clock
from tests.test_sync_contract import EXAMPLES

# A lone surrogate: valid JSON text, but no UTF-8 encoding exists for it.
SURROGATE = '{"id":"sur","static_analysis_tools":[{"tool_name":"cl\\ud800ppy"}]}'


# --- retry with backoff (time passed in) ---------------------------------------------


def test_backoff_doubles_from_one_second_up_to_the_ceiling_and_resets():
    backoff = Backoff(ceiling=10.0, rng=random.Random(1))
    delays = [backoff.failed(0.0) for _ in range(8)]
    for attempt, delay in enumerate(delays):
        nominal = min(2.0**attempt, 10.0)
        assert 0.8 * nominal <= delay <= nominal  # jitter only ever shortens
    assert backoff.failures == 8 and backoff.due == delays[-1]
    backoff.succeeded()
    assert (backoff.failures, backoff.due) == (0, None)
    assert backoff.failed(50.0) <= 1.0


def test_backoff_honours_retry_after():
    backoff = Backoff(ceiling=10.0)
    assert backoff.failed(0.0, retry_after=42.0) == 42.0
    assert backoff.due == 42.0


def test_trigger_runs_a_retry_when_it_falls_due():
    clock = Clock()
    trigger = Trigger(min_gap=1.0, clock=clock)
    trigger.retry_at(clock.now + 4)
    assert trigger.due(clock.now) == 4
    clock.now += 4
    assert trigger.wait(0) == ["retry"]
    trigger.finished()
    assert trigger.due(clock.now) is None  # the retry was consumed
    trigger.retry_at(clock.now + 5)
    trigger.retry_at(None)
    assert trigger.due(clock.now) is None
    trigger.request("event")  # a request does not wait for a pending retry
    trigger.retry_at(clock.now + 30)
    assert trigger.due(clock.now) == 1.0


# --- isolation of the unexpected -----------------------------------------------------


class Broken:
    """A source with a bug: its listing raises what nobody raises on purpose."""

    name = "broken"

    def list(self) -> Listing:
        return {}["missing"]  # type: ignore[no-any-return]

    def close(self) -> None:
        """Nothing held."""


def sqlite(tmp_path: Path) -> SqliteRegistry:
    return SqliteRegistry(
        tmp_path / "r.db",
        Ownership(service="worker", owner="t", node="capsync-t"),
        node_address="127.0.0.1",
    )


def target(registry: SqliteRegistry) -> RegistrySync:
    return RegistrySync("sqlite", registry, SyncOptions("worker", "t"))


def test_a_source_that_raises_anything_is_that_source_failed(tmp_path: Path):
    registry = sqlite(tmp_path)
    fleet = tmp_path / "fleet"
    shutil.copytree(EXAMPLES, fleet)
    syncer = Syncer([FileSource(fleet), Broken()], [target(registry)])
    try:
        report = syncer.run_once()
        broken = report.sources[1]
        assert not broken.ok and broken.error == "unexpected KeyError: 'missing'"
        assert report.sources[0].ok and len(report.registries[0].changes.create) == 9
        assert len(registry.snapshot().owned) == 9
    finally:
        registry.close()


def test_an_unexpected_registry_exception_is_a_failed_cycle(tmp_path: Path):
    class Exploding(SqliteRegistry):
        def apply(self, changes, stop=None):  # type: ignore[no-untyped-def]
            raise UnicodeEncodeError("utf-8", "cl\ud800ppy", 2, 3, "surrogates not allowed")

    registry = Exploding(
        tmp_path / "r.db", Ownership("worker", "t", "capsync-t"), node_address="127.0.0.1"
    )
    fleet = tmp_path / "fleet"
    shutil.copytree(EXAMPLES, fleet)
    try:
        report = Syncer([FileSource(fleet)], [target(registry)]).run_once()
    finally:
        registry.close()
    assert not report.ok
    error = report.registries[0].registry_error
    assert error.startswith("unexpected UnicodeEncodeError: ") and "\n" not in error


def test_retry_after_reaches_the_report(tmp_path: Path):
    class Throttled(SqliteRegistry):
        def snapshot(self):  # type: ignore[no-untyped-def]
            raise RegistryError("Consul answered 429", retry_after=7.0)

    registry = Throttled(
        tmp_path / "r.db", Ownership("worker", "t", "capsync-t"), node_address="127.0.0.1"
    )
    try:
        report = Syncer([], [target(registry)]).run_once()
    finally:
        registry.close()
    assert report.retry_after == 7.0 and not report.ok


def test_hostile_tool_name_does_not_end_a_sqlite_daemon(tmp_path: Path):
    fleet = tmp_path / "fleet"
    shutil.copytree(EXAMPLES, fleet)
    (fleet / "sur.json").write_text(SURROGATE)
    proc = Daemon(
        [
            "--registry",
            f"sqlite:{tmp_path / 'r.db'}",
            "--owner",
            "t",
            "--source",
            f"file:{fleet}",
            "--interval",
            "600s",
        ]
    ).started()
    try:
        proc.wait_for(lambda line: "event=cycle" in line)
        assert proc.get("/healthz").status_code == 200
        (fleet / "sur.json").unlink()
        wait_until(lambda: proc.status()["last_cycle"]["ok"], 15)
        listed = run_cli(
            "list", "--registry", f"sqlite:{tmp_path / 'r.db'}", "--owner", "t", "--json"
        )
        assert len(json.loads(listed.stdout)) == 9
        assert proc.proc.poll() is None
        assert not any("Traceback" in line for line in proc.lines)
    finally:
        assert proc.stop() == 0


def test_consul_outage_is_repaired_within_seconds_of_its_return(tmp_path: Path):
    """Interval 10 minutes, no source event: the daemon notices Consul went away, and
    repairs the registry (here: a restarted agent that lost its data) when it is back."""
    fleet = tmp_path / "fleet"
    shutil.copytree(EXAMPLES, fleet)
    double = ConsulDouble().start()
    port = double.port
    target = ConsulTarget(double.address, double)
    proc = Daemon(
        ["--owner", target.owner, "--source", f"file:{fleet}", "--interval", "600s"],
        env=target.env(),
    ).started()
    try:
        wait_until(lambda: len(target.services()) == 9, 15)
        double.stop()
        status = wait_until(lambda: (s := proc.status())["consecutive_failures"] >= 2 and s, 20)
        assert status["next_attempt"] is not None and not status["ready"]
        time.sleep(3)
        double = ConsulDouble(port=port).start()  # back, empty
        target = ConsulTarget(double.address, double, owner=target.owner)
        wait_until(lambda: len(target.services()) == 9, 5)  # a few seconds, not 10 minutes
        wait_until(lambda: proc.status()["consecutive_failures"] == 0, 5)
        metrics = proc.get("/metrics").text
        assert any(
            line.startswith("capsync_retries_total ") and float(line.split()[1]) >= 1
            for line in metrics.splitlines()
        )
        assert not any("event: file" in line for line in proc.lines)
    finally:
        assert proc.stop() == 0
        double.stop()


# --- bounded reads -------------------------------------------------------------------


def test_fifo_device_and_symlink_loop_are_invalid_entries_not_a_blocked_source(tmp_path: Path):
    fleet = tmp_path / "fleet"
    shutil.copytree(EXAMPLES, fleet)
    os.mkfifo(fleet / "pipe.json")
    (fleet / "loop-a.json").symlink_to(fleet / "loop-b.json")
    (fleet / "loop-b.json").symlink_to(fleet / "loop-a.json")
    (fleet / "zero.json").symlink_to("/dev/zero")
    result = run_cli("validate", str(fleet), timeout=20)
    assert "ok " in result.stdout and result.returncode == 1
    assert "loop-a.json: cannot read: Too many levels of symbolic links" in result.stdout
    assert "Traceback" not in result.stderr
    fifo = run_cli("validate", str(fleet / "pipe.json"), timeout=20)
    assert fifo.returncode == 1 and "not a regular file" in fifo.stdout


def max_rss_mb_of_run_once(fleet: Path, tmp_path: Path) -> float:
    """Peak RSS of a `capsync run --once` child, from its own rusage (wait4)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daemon.cli",
            "run",
            "--once",
            "--owner",
            "t",
            "--registry",
            f"sqlite:{tmp_path / 'r.db'}",
            "--source",
            f"file:{fleet}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=child_environment(),
        cwd=ROOT,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0  # the big file is one invalid declaration
    return usage.ru_maxrss / 1024


def test_a_sparse_gigabyte_file_costs_no_memory(tmp_path: Path):
    fleet = tmp_path / "fleet"
    shutil.copytree(EXAMPLES, fleet)
    with (fleet / "small.json").open("wb") as handle:
        handle.truncate(65 * 1024)
    usual = max_rss_mb_of_run_once(fleet, tmp_path)
    (fleet / "small.json").unlink()
    with (fleet / "huge.json").open("wb") as handle:
        handle.truncate(1 << 30)
    result = run_cli("validate", str(fleet / "huge.json"))
    assert "more than 65536 bytes; a declaration may be at most 65536 bytes" in result.stdout
    assert max_rss_mb_of_run_once(fleet, tmp_path) < usual + 50


# --- clear errors instead of tracebacks ----------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'[daemon]\ninterval = "' + b"9" * 400 + b's"\n', "daemon.interval: Value error, "),
        (b"[daemon]\ninterval = inf\n", "daemon.interval"),
        (b'[registry]\nowner = "caf\xe9"\n', "not UTF-8"),
        (b'[consul]\ntoken = "abc\\ndef"\n', "consul.token"),
        (b'[consul]\ntoken = "t\xc3\xa9st"\n', "non-ASCII"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(tmp_path: Path, content: bytes, expected: str):
    config = tmp_path / "c.toml"
    config.write_bytes(content)
    for args in (
        ["config", "check", str(config)],
        ["run", "--once", "--config", str(config), "--source", "file:/nonexistent"],
    ):
        result = run_cli(*args)
        assert result.returncode == 2, result
        assert expected.removesuffix("Value error, ") in result.stderr
        assert "Traceback" not in result.stderr and "Infinity" not in result.stdout
    assert "abc" not in run_cli("config", "check", str(config)).stderr.replace(str(config), "")


def test_token_file_not_utf8_or_multiline_is_one_line_exit_2(tmp_path: Path):
    token = tmp_path / "token"
    for raw, expected in ((b"\xff\xfe", "not UTF-8"), (b"t0ken\nvalue\n", "a line break")):
        token.write_bytes(raw)
        token.chmod(0o600)  # as a secret should be: no secret_file_readable line beside it
        result = run_cli(
            "run",
            "--once",
            "--source",
            f"file:{EXAMPLES}",
            env={"CONSUL_HTTP_TOKEN_FILE": str(token)},
        )
        assert result.returncode == 2 and expected in result.stderr
        assert result.stderr.count("\n") == 1 and "t0ken" not in result.stderr


def test_occupied_and_unresolvable_listen_addresses(tmp_path: Path):
    with ConsulDouble() as double:
        for listen in (double.address, "no-such-host.invalid:9469"):
            result = run_cli(
                "run",
                "--listen",
                listen,
                "--registry",
                f"sqlite:{tmp_path / 'r.db'}",
                "--source",
                f"file:{EXAMPLES}",
            )
            assert result.returncode == 2, result
            assert "daemon.listen" in result.stderr and "cannot listen there" in result.stderr
            assert "Traceback" not in result.stderr


def test_find_into_a_closed_pipe_is_quiet(tmp_path: Path):
    db = f"sqlite:{tmp_path / 'r.db'}"
    big = tmp_path / "big"
    big.mkdir()
    for i in range(2000):
        (big / f"w{i}.json").write_text(json.dumps({"id": f"w-{i}"}))
    assert run_cli("run", "--once", "--registry", db, "--source", f"file:{big}").returncode == 0
    pipeline = subprocess.run(
        f"{sys.executable} -m daemon.cli list --registry {db} | head -1",
        shell=True,
        capture_output=True,
        env=child_environment(),
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert pipeline.stdout.count(b"\n") == 1
    assert b"Traceback" not in pipeline.stderr and b"BrokenPipe" not in pipeline.stderr


def test_an_error_page_from_consul_is_cut_to_one_short_line():
    page = "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>" + "x" * 5000
    with ConsulDouble() as double:
        double.fail_requests(502, page + "</body>\n</html>\n")
        result = run_cli(
            "run",
            "--once",
            "--owner",
            "t",
            "--source",
            f"file:{EXAMPLES}",
            env={"CONSUL_HTTP_ADDR": double.address},
        )
    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if "registry_failed" in line]
    assert "(502): <html> <head><title>502 Bad Gateway" in line and len(line) < 400


def test_a_reload_that_fails_for_any_reason_keeps_the_running_configuration(tmp_path: Path):
    fleet = tmp_path / "fleet"
    shutil.copytree(EXAMPLES, fleet)
    db = tmp_path / "r.db"
    config = tmp_path / "capsync.toml"
    good = (
        f'[registry]\nbackend = "sqlite"\npath = "{db}"\nowner = "t"\n'
        f'[[sources]]\ntype = "file"\npath = "{fleet}"\n'
    )
    config.write_text(good)
    proc = Daemon(["--config", str(config), "--interval", "600s"]).started()
    try:
        proc.wait_for(lambda line: "event=cycle" in line)
        for bad in (
            b'[registry]\nowner = "caf\xe9"\n',
            b'[daemon]\nmin_gap = "' + b"9" * 400 + b's"\n',
            good.encode() + b'[consul]\naddress = "http://[::1"\n[[sources]]\ntype = "consul"\n',
        ):
            config.write_bytes(bad)
            seen = sum("event=reload_failed" in line for line in proc.lines)
            proc.signal(signal.SIGHUP)
            wait_until(
                lambda n=seen: sum("event=reload_failed" in line for line in proc.lines) > n, 10
            )
        failures = [line for line in proc.lines if "event=reload_failed" in line]
        assert "not UTF-8" in failures[0] and "daemon.min_gap" in failures[1]
        assert "consul.address" in failures[2]
        assert all("keeping the running configuration" in line for line in failures)
        (fleet / "late.json").write_text('{"id": "late-worker"}')
        wait_until(
            lambda: (
                "late-worker"
                in run_cli("list", "--registry", f"sqlite:{db}", "--owner", "t").stdout
            ),
            10,
        )
        assert proc.get("/healthz").status_code == 200
    finally:
        assert proc.stop() == 0
