"""The seed's WebSocket messages and the live watch, with real WebSocket clients against
a running daemon and the Consul double."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.consul_target import ConsulTarget
from tests.daemon_process import wait_until
from tests.doubles.consul import ConsulDouble
from tests.push_daemon import TOKEN, PushDaemon, send

GRACE = 2.0


@pytest.fixture
def target():
    with ConsulDouble() as double:
        yield ConsulTarget(double.address, double)


@pytest.fixture
def push(target: ConsulTarget, tmp_path: Path):
    proc = PushDaemon(target, tmp_path, env={"CAPSYNC_API__GRACE": f"{GRACE}s"}).started()
    yield proc
    assert proc.stop() == 0


def test_every_message_is_answered_and_the_connection_kept(push: PushDaemon, target: ConsulTarget):
    with push.websocket() as ws:
        assert send(
            ws,
            {
                "action": "Register",
                "capabilities": {
                    "id": "ws-rust",
                    "static_analysis_tools": [{"tool_name": "clippy"}],
                },
            },
        ) == {"ok": True, "action": "Register", "id": "ws-rust", "message": "", "errors": []}
        malformed = send(ws, "{not json")
        assert malformed["ok"] is False and malformed["message"] == "malformed JSON"
        unknown = send(ws, {"action": "Delete", "capabilities": {}})
        assert unknown["ok"] is False and unknown["errors"][0]["field"] == "action"
        invalid = send(
            ws,
            {
                "action": "Register",
                "capabilities": {"id": "bad id", "fuzzing_tools": [{"tool_name": ""}]},
            },
        )
        assert {e["field"] for e in invalid["errors"]} == {
            "capabilities.id",
            "capabilities.fuzzing_tools[0].tool_name",
        }
        ws.send(b'{"action": "Update", "capabilities": {"id": "never-registered"}}')
        assert json.loads(ws.recv(timeout=10))["message"] == "not registered: send Register first"
        assert send(
            ws,
            {
                "action": "Update",
                "capabilities": {
                    "id": "ws-rust",
                    "static_analysis_tools": [{"tool_name": "semgrep"}],
                },
            },
        )["ok"]
        wait_until(lambda: target.services().get("ws-rust", {}).get("ServiceTags") == ["semgrep"])
        assert send(ws, {"action": "Unregister", "capabilities": {"id": "ws-rust"}})["ok"]
        wait_until(lambda: "ws-rust" not in target.services())
        assert send(ws, {"action": "Unregister", "capabilities": {"id": "ws-rust"}})["ok"] is False


def test_closed_connection_workers_leave_after_the_grace_period(
    push: PushDaemon, target: ConsulTarget
):
    with push.websocket() as other:
        with push.websocket() as ws:
            for worker in ("ws-a", "ws-b"):
                assert send(ws, {"action": "Register", "capabilities": {"id": worker}})["ok"]
            wait_until(lambda: {"ws-a", "ws-b"} <= set(target.services()))
        closed = time.monotonic()
        # The worker comes back on another connection before the grace period ends.
        assert send(other, {"action": "Register", "capabilities": {"id": "ws-b"}})["ok"]
        wait_until(lambda: "ws-a" not in target.services(), 10, 0.05)
        assert time.monotonic() - closed >= GRACE  # not before the grace period
        assert "ws-b" in target.services()
        push.wait_for(lambda line: "event=cycle" in line and "1 deleted" in line)


def test_writes_over_websocket_need_the_token(push: PushDaemon):
    """Refused with a close code and the reason, not a bare 403: the token, the query."""
    with push.websocket(token="wrong") as ws, pytest.raises(ConnectionClosed) as refused:
        ws.recv(timeout=10)
    assert refused.value.rcvd is not None
    assert (refused.value.rcvd.code, refused.value.rcvd.reason) == (
        1008,
        "writes need the API token: Authorization: Bearer",
    )
    with (
        push.websocket("/workers/watch?since=yesterday") as watch,
        pytest.raises(ConnectionClosed) as bad_query,
    ):
        watch.recv(timeout=10)
    assert bad_query.value.rcvd is not None and bad_query.value.rcvd.code == 1008
    assert "query parameter 'since'" in bad_query.value.rcvd.reason


def test_watch_snapshot_events_and_resume(push: PushDaemon, target: ConsulTarget):
    assert push.register({"id": "before"}).ok
    push.wait_for(lambda line: "event=cycle" in line and "1 created" in line)
    with push.websocket("/workers/watch") as watch:
        snapshot = json.loads(watch.recv(timeout=10))
        assert snapshot["type"] == "snapshot"
        assert [e["id"] for e in snapshot["entries"]] == ["before"]
        assert snapshot["entries"][0]["registry"] == "consul"
        assert push.register({"id": "before", "flags": {"gpu": True}}).ok
        updated = json.loads(watch.recv(timeout=10))
        assert (updated["type"], updated["action"], updated["id"]) == ("event", "updated", "before")
        assert updated["declaration"]["flags"] == {"gpu": True}
        assert updated["sequence"] == snapshot["sequence"] + 1
        assert push.register({"id": "after"}).ok
        created = json.loads(watch.recv(timeout=10))
        assert (created["action"], created["id"]) == ("created", "after")
        assert push.delete("before").ok
        deleted = json.loads(watch.recv(timeout=10))
        assert (deleted["action"], deleted["id"]) == ("deleted", "before")
    resume = f"/workers/watch?stream={snapshot['stream']}&since={updated['sequence']}"
    with push.websocket(resume) as watch:
        head = json.loads(watch.recv(timeout=10))
        assert head["type"] == "resume"
        replay = [json.loads(watch.recv(timeout=10)) for _ in range(2)]
        assert [(e["action"], e["id"]) for e in replay] == [
            ("created", "after"),
            ("deleted", "before"),
        ]
    with push.websocket("/workers/watch?stream=another-daemon&since=3") as watch:
        fresh = json.loads(watch.recv(timeout=10))
        assert fresh["type"] == "snapshot" and [e["id"] for e in fresh["entries"]] == ["after"]


def test_connection_and_message_limits(target: ConsulTarget, tmp_path: Path):
    proc = PushDaemon(
        target, tmp_path, env={"CAPSYNC_API__MAX_WEBSOCKETS": "1", "CAPSYNC_API__MAX_WATCHERS": "1"}
    ).started()
    try:
        with proc.websocket() as first:
            with pytest.raises(ConnectionClosed) as refused, proc.websocket() as second:
                second.recv(timeout=10)
            assert refused.value.rcvd.code == 1013
            first.send(
                json.dumps(
                    {
                        "action": "Register",
                        "capabilities": {"id": "big", "metadata": {"k": "v" * 70_000}},
                    }
                )
            )
            with pytest.raises(ConnectionClosed) as too_big:
                first.recv(timeout=10)
            assert too_big.value.rcvd.code == 1009
        with proc.websocket("/workers/watch") as watcher:
            assert json.loads(watcher.recv(timeout=10))["type"] == "snapshot"
            with pytest.raises(ConnectionClosed), proc.websocket("/workers/watch") as extra:
                extra.recv(timeout=10)
        assert proc.get("/healthz").status_code == 200  # the daemon carries on
    finally:
        assert proc.stop() == 0


CLIENT = """
import json, sys, time
from websockets.sync.client import connect
with connect(sys.argv[1], additional_headers={"Authorization": "Bearer " + sys.argv[2]}) as ws:
    ws.send(json.dumps({"action": "Register", "capabilities": {"id": "frozen"}}))
    print(ws.recv(timeout=10), flush=True)
    time.sleep(120)
"""


def test_a_client_that_stops_answering_pings_is_dropped_after_the_grace(
    target: ConsulTarget, tmp_path: Path
):
    proc = PushDaemon(
        target,
        tmp_path,
        env={"CAPSYNC_API__GRACE": f"{GRACE}s", "CAPSYNC_API__PING_INTERVAL": "1s"},
    ).started()
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, f"ws://{proc.address}/workers/ws", TOKEN],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout is not None and '"ok":true' in client.stdout.readline()
        wait_until(lambda: "frozen" in target.services())
        client.send_signal(signal.SIGSTOP)  # the connection stays open, nothing answers
        frozen = time.monotonic()
        wait_until(lambda: "frozen" not in target.services(), 15, 0.05)
        assert time.monotonic() - frozen >= GRACE  # a missed ping, then the grace period
    finally:
        client.kill()
        client.wait()
        client.stdout.close()
        assert proc.stop() == 0
