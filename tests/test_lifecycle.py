"""Lifecycle: a reload and the exit close every source, client and registry they
replace; no watcher thread outlives its runtime; leadership stops cleanly."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from config.errors import ConfigError
from daemon import runtime as runtime_module
from daemon import wiring
from daemon.leader import Leadership
from daemon.settings_model import SETTINGS
from discovery.consul.client import ConsulClient, ConsulEndpoint
from discovery.sources.consul import ConsulSource
from discovery.sources.file import FileSource
from tests.consul_target import ConsulTarget
from tests.daemon_process import Daemon, wait_until
from tests.doubles.consul import ConsulDouble
from tests.test_sync_contract import EXAMPLES


def counts(pid: int) -> tuple[int, int]:
    return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))


def test_fifty_sighups_leak_no_thread_and_no_descriptor(tmp_path: Path):
    fleet = tmp_path / "fleet"
    shutil.copytree(EXAMPLES, fleet)
    with ConsulDouble() as double:
        target = ConsulTarget(double.address, double)
        config = tmp_path / "capsync.toml"
        config.write_text(
            f'[registry]\nowner = "{target.owner}"\n'
            "[daemon]\nleader_election = true\nsession_ttl = 10\n"
            f'[[sources]]\ntype = "file"\npath = "{fleet}"\n'
            '[[sources]]\ntype = "consul"\nname = "others"\nservices = ["legacy"]\n'
        )
        proc = Daemon(["--config", str(config), "--interval", "600s"], env=target.env()).started()
        pid = proc.proc.pid
        try:
            wait_until(lambda: len(target.services()) == 9, 15)
            proc.signal(signal.SIGHUP)
            proc.wait_for(lambda line: "event=reloaded" in line)
            time.sleep(2.5)  # the replaced watchers have ended
            threads, fds = counts(pid)
            for _ in range(50):
                proc.signal(signal.SIGHUP)
                time.sleep(0.1)
            # Signals that arrive during a reload collapse into one more reload.
            wait_until(lambda: sum("event=reloaded" in line for line in proc.lines) >= 3, 30)
            wait_until(lambda: counts(pid)[0] <= threads + 2, 15, 0.5)
            assert counts(pid)[1] <= fds + 4
            assert proc.get("/healthz").status_code == 200
            assert not any("watcher_still_running" in line for line in proc.lines)
        finally:
            assert proc.stop() == 0


def test_closing_a_consul_source_ends_its_watch_within_two_seconds():
    with ConsulDouble() as double:
        source = ConsulSource(ConsulClient(ConsulEndpoint(double.address)))
        stop = threading.Event()
        watcher = threading.Thread(target=source.watch, args=(lambda reason: None, stop))
        watcher.start()
        time.sleep(0.5)  # inside its blocking query
        stop.set()
        source.close()
        watcher.join(2)
        assert not watcher.is_alive()


def test_leadership_after_close_takes_no_session_and_no_lock():
    with ConsulDouble() as double:
        changes: list[bool] = []
        leadership = Leadership(
            ConsulClient(ConsulEndpoint(double.address)),
            key="capsync/t/leader",
            ttl=10,
            holder="t@host",
        )
        leadership.start(changes.append)
        assert leadership.is_leader and changes == [True]
        leadership.close()
        assert not leadership.is_leader and changes == [True, False]
        before = double.count("PUT")
        leadership._step()  # what a late renew tick would do
        assert double.count("PUT") == before and not leadership.is_leader
        assert not any(t.name.startswith("leader-") and t.is_alive() for t in threading.enumerate())


def test_a_watch_that_raises_is_logged_and_started_again(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(runtime_module, "WATCH_RESTART_SECONDS", 0.05)
    settings = SETTINGS.model_validate(
        {
            "registry": {"backend": "sqlite", "path": str(tmp_path / "r.db"), "owner": "t"},
            "sources": [{"type": "file", "path": str(EXAMPLES)}],
        }
    )
    runtime = runtime_module.Runtime(settings, lambda reason: None)
    calls: list[int] = []

    def broken_watch(notify, stop):  # type: ignore[no-untyped-def]
        calls.append(1)
        raise RuntimeError("bug in a watch")

    runtime.sources[0].watch = broken_watch  # type: ignore[method-assign]
    runtime.start(lambda leader: None)
    try:
        wait_until(lambda: len(calls) >= 3, 5, 0.02)
    finally:
        runtime.close()
    assert not any(t.name == "watch-file" and t.is_alive() for t in threading.enumerate())


def test_sources_built_before_a_failing_one_are_closed_again(monkeypatch, tmp_path: Path):
    closed: list[str] = []
    monkeypatch.setattr(FileSource, "close", lambda self: closed.append(self.name))
    settings = SETTINGS.model_validate(
        {
            "registry": {"backend": "sqlite", "path": str(tmp_path / "r.db"), "owner": "t"},
            "consul": {"address": "http://[::1"},  # refused when the consul source is built
            "sources": [
                {"type": "file", "name": "a", "path": str(EXAMPLES)},
                {"type": "file", "name": "b", "path": str(EXAMPLES)},
                {"type": "consul"},
            ],
        }
    )
    with pytest.raises(ConfigError, match=r"consul\.address"):
        wiring.build_sources(settings)
    assert closed == ["a", "b"]
