"""Workers register themselves: the seed's REST API against a running daemon and the
Consul double, with real HTTP clients. What a worker and an operator would notice."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import pytest
import requests

from discovery.inbox import PURGE_AFTER, Registration, SqliteInbox
from tests.conftest import SEED_CRD_SPEC, run_cli
from tests.consul_target import ConsulTarget
from tests.daemon_process import wait_until
from tests.doubles.consul import ConsulDouble
from tests.push_daemon import TOKEN, PushDaemon
from tests.test_monitoring_metrics import value
from tests.test_sync_contract import EXAMPLES

FIND_CLIPPY = {"capability_type": "static_analysis", "required_tools": ["clippy"]}


@pytest.fixture
def push(consul: ConsulTarget, tmp_path: Path):
    proc = PushDaemon(consul, tmp_path).started()
    yield proc
    assert proc.stop() == 0


def test_registration_reaches_consul_with_tags_and_meta(push: PushDaemon, consul: ConsulTarget):
    answer = push.register(SEED_CRD_SPEC)  # the seed's CRD spec: camelCase is accepted
    assert answer.status_code == 200
    # The seed's RegisterResponse, byte for byte as serde_json writes it.
    assert answer.content == b'{"success":true,"message":"Worker registered"}'
    service = wait_until(lambda: consul.services().get("rust-worker-1"))
    assert sorted(service["ServiceTags"]) == ["cargo-audit", "cargo-fmt", "clippy", "rustfmt"]
    meta = service["ServiceMeta"]
    assert meta["capsync-source"] == "push"
    assert meta["capsync-ref"] == "rest/rust-worker-1"
    assert meta["static_analysis"] == "clippy!,rustfmt|cargo-fmt"
    assert meta["security_scanning"] == "cargo-audit!"
    assert meta["flag-ast_support"] == "true" and meta["platform"] == "linux"
    push.wait_for(lambda line: "event=cycle" in line and "push: rest registered" in line)


def test_seed_find_and_the_listing_routes(push: PushDaemon, consul: ConsulTarget):
    push.register(SEED_CRD_SPEC)
    push.register(
        {
            "id": "py-worker",
            "test_framework_tools": [{"tool_name": "pytest"}],
            "metadata": {"team": "qa"},
        }
    )
    wait_until(lambda: len(consul.services()) == 2)
    found = push.post("/workers/find", FIND_CLIPPY).json()
    assert [w["id"] for w in found] == ["rust-worker-1"]
    clippy = found[0]["static_analysis_tools"][0]  # the library's full serde form
    assert (clippy["tool_name"], clippy["required"], clippy["alternatives"]) == ("clippy", True, [])
    by_alternative = {"capability_type": "static_analysis", "required_tools": ["cargo-fmt"]}
    assert [w["id"] for w in push.post("/workers/find", by_alternative).json()] == ["rust-worker-1"]
    # The seed's semantics: an unknown category, or no tool of it, selects nothing.
    assert (
        push.post("/workers/find", {"capability_type": "nope", "required_tools": ["clippy"]}).json()
        == []
    )
    assert (
        push.post(
            "/workers/find", {"capability_type": "fuzzing", "required_tools": ["clippy"]}
        ).json()
        == []
    )
    listed = push.get("/workers?has=pytest").json()
    assert [w["id"] for w in listed] == ["py-worker"]
    assert [w["id"] for w in push.get("/workers?meta=team=qa").json()] == ["py-worker"]
    refused = push.get("/workers?category=fuzzing")  # needs a tool: said in REST's terms
    assert refused.status_code == 400
    assert refused.json()["message"] == (
        "query parameter 'category' and query parameter 'tool' go together"
    )
    bad_meta = push.get("/workers?meta=novalue").json()["message"]
    assert bad_meta.startswith("query parameter 'meta' 'novalue'") and "--" not in bad_meta
    shown = push.get("/workers/RUST-WORKER-1").json()
    assert (shown["source"], shown["ref"], shown["owner"]) == (
        "push",
        "rest/rust-worker-1",
        consul.owner,
    )
    assert push.get("/workers/nobody").status_code == 404
    cli = run_cli(
        "find",
        "--category",
        "static_analysis",
        "--tool",
        "clippy",
        "--json",
        "--owner",
        consul.owner,
        env=consul.env(),
    )
    assert [w["id"] for w in json.loads(cli.stdout)] == [w["id"] for w in found]


def test_refusals_change_nothing(consul: ConsulTarget, tmp_path: Path):
    fleet = tmp_path / "fleet"
    shutil.copytree(EXAMPLES, fleet)
    proc = PushDaemon(consul, tmp_path, "--source", f"file:{fleet}").started()
    try:
        assert proc.register({"id": "kept", "fuzzing_tools": [{"tool_name": "afl"}]}).ok
        wait_until(lambda: "kept" in consul.services())
        before = consul.services()
        bad = proc.register(
            {
                "id": "kept",
                "static_analysis_tool": [],
                "fuzzing_tools": [{"tool_name": "a\tb", "required": "yes"}],
            }
        )
        assert bad.status_code == 422
        body = bad.json()
        assert body["success"] is False
        fields = {error["field"] for error in body["errors"]}
        assert fields == {
            "static_analysis_tool",
            "fuzzing_tools[0].tool_name",
            "fuzzing_tools[0].required",
        }
        assert proc.register({"id": "x"}, ttl=-1).status_code == 422
        raw = requests.post(
            f"http://{proc.address}/workers/register",
            data=b"{not json",
            headers=proc.auth(),
            timeout=5,
        )
        assert raw.status_code == 400 and raw.json()["success"] is False
        huge = {"id": "huge", "metadata": {f"k{i}": "v" * 500 for i in range(140)}}
        assert proc.register(huge).status_code == 413
        wrong = proc.register({"id": "intruder"}, token="not-" + TOKEN)
        assert wrong.status_code == 401
        assert (
            requests.post(
                f"http://{proc.address}/workers/register", json={"id": "anon"}, timeout=5
            ).status_code
            == 401
        )
        assert proc.delete("kept", token="nope").status_code == 401
        refused = proc.delete("go-worker-1")  # from the file source, not pushed
        assert refused.status_code == 409 and "source 'file'" in refused.json()["message"]
        assert proc.delete("nobody").status_code == 404
        time.sleep(1.5)  # let any wrongly triggered cycle run
        assert consul.services() == before
        assert proc.delete("kept").json() == {"success": True, "message": "Worker unregistered"}
        wait_until(lambda: "kept" not in consul.services())
    finally:
        assert proc.stop() == 0
    assert TOKEN not in "\n".join(proc.lines)


def test_restarted_daemon_still_has_every_registration(tmp_path: Path):
    with ConsulDouble() as double:
        target = ConsulTarget(double.address, double)
        first = PushDaemon(target, tmp_path).started()
        try:
            for i in range(5):
                assert first.register({"id": f"w-{i}"}).ok
        finally:
            assert first.stop() == 0
    with ConsulDouble() as fresh:  # an empty Consul: everything must come from the inbox
        target = ConsulTarget(fresh.address, fresh, owner=target.owner)
        again = PushDaemon(target, tmp_path).started()
        try:
            wait_until(lambda: len(target.services()) == 5)
        finally:
            assert again.stop() == 0


def test_leases_expire_through_the_plan_and_the_guard(tmp_path: Path):
    with ConsulDouble() as double:
        target = ConsulTarget(double.address, double)
        proc = PushDaemon(target, tmp_path, "--interval", "1s").started()
        try:
            for i in range(8):
                assert proc.register({"id": f"leased-{i}"}, ttl=3).ok
            assert proc.register({"id": "short"}, ttl=1).ok
            assert proc.register({"id": "forever"}).ok
            wait_until(lambda: len(target.services()) == 10)
            # One lease runs out while the daemon runs: deleted by the plan.
            wait_until(lambda: "short" not in target.services(), 10)
            assert len(target.services()) == 9
        finally:
            assert proc.stop() == 0
        time.sleep(3)  # the daemon is down longer than the leases
        back = PushDaemon(target, tmp_path, "--interval", "1s").started()
        try:
            line = back.wait_for(lambda line: "event=deletions_held" in line)
            assert "count=8" in line and "mass-deletion guard" in line
            assert back.status()["last_cycle"]["plan"]["summary"]["held"] == 8
            assert len(target.services()) == 9  # held, not emptied
            assert back.register({"id": "leased-0"}).ok  # renewing brings one back
        finally:
            assert back.stop() == 0


def test_non_loopback_listen_without_token_is_refused(tmp_path: Path):
    result = run_cli(
        "run",
        "--listen",
        "0.0.0.0:0",
        "--source",
        f"push:{tmp_path / 'i.db'}",
        "--registry",
        f"sqlite:{tmp_path / 'r.db'}",
        timeout=30,
    )
    assert result.returncode == 2  # a configuration error
    assert "not a loopback address and no API token" in result.stderr


def test_token_from_the_systemd_credential(consul: ConsulTarget, tmp_path: Path):
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "capsync-api-token").write_text("cred-" + TOKEN)
    proc = PushDaemon(
        consul,
        tmp_path,
        "--listen",
        "0.0.0.0:0",
        token=None,
        env={"CREDENTIALS_DIRECTORY": str(credentials)},
    ).started()
    try:
        assert proc.address.startswith("0.0.0.0:")  # allowed: there is a token
        assert proc.register({"id": "a"}, token=TOKEN).status_code == 401
        assert proc.register({"id": "a"}, token="cred-" + TOKEN).status_code == 200
    finally:
        assert proc.stop() == 0
    assert "cred-" + TOKEN not in "\n".join(proc.lines)


def test_with_leader_election_any_daemon_accepts_and_the_leader_syncs(tmp_path: Path):
    env = {"CAPSYNC_DAEMON__LEADER_ELECTION": "true", "CAPSYNC_DAEMON__SESSION_TTL": "10s"}
    with ConsulDouble() as double:
        target = ConsulTarget(double.address, double)
        daemons = []
        for name in ("one", "two"):
            (tmp_path / name).mkdir()
            daemons.append(PushDaemon(target, tmp_path / name, env=env).started())
        try:
            follower = wait_until(
                lambda: [
                    d for d in daemons if d.status()["last_cycle"] and not d.status()["leader"]
                ],
                15,
            )[0]
            assert follower.register({"id": "via-follower"}).ok
            wait_until(lambda: "via-follower" in target.services(), 15)
            stored = target.get("/v1/kv/capsync/inbox/via-follower")
            assert stored[0]["Key"] == "capsync/inbox/via-follower"
        finally:
            for proc in daemons:
                assert proc.stop() == 0


def test_the_push_source_position_is_its_precedence(consul: ConsulTarget, tmp_path: Path):
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "shared.json").write_text('{"id": "shared", "flags": {"from_file": true}}')
    proc = PushDaemon(consul, tmp_path, "--source", f"file:{fleet}").started()  # push first
    try:
        assert proc.register({"id": "shared", "flags": {"from_push": True}}).ok
        wait_until(
            lambda: (
                consul.services().get("shared", {}).get("ServiceMeta", {}).get("capsync-source")
                == "push"
            )
        )
        line = proc.wait_for(lambda line: "event=conflict" in line and "shared" in line)
        assert "push" in line
    finally:
        assert proc.stop() == 0


def test_registrations_are_taken_across_a_reload(consul: ConsulTarget, tmp_path: Path):
    proc = PushDaemon(consul, tmp_path).started()
    try:
        assert proc.register({"id": "before-reload"}).ok
        wait_until(lambda: "before-reload" in consul.services())
        proc.signal(signal.SIGHUP)
        proc.wait_for(lambda line: "event=reloaded" in line)
        assert proc.register({"id": "after-reload"}).ok
        wait_until(lambda: {"before-reload", "after-reload"} <= set(consul.services()))
    finally:
        assert proc.stop() == 0


def test_a_sighup_applies_a_rotated_token_and_reports_an_emptied_file(
    consul: ConsulTarget, tmp_path: Path
):
    proc = PushDaemon(consul, tmp_path).started()
    token_file = tmp_path / "api-token"
    try:
        assert proc.register({"id": "before"}).ok
        token_file.write_text("rotated-" + TOKEN + "\n")
        proc.signal(signal.SIGHUP)
        proc.wait_for(lambda line: "event=token_rotated" in line)
        # The old token stops working at once; the new one works; nothing needs a restart.
        assert proc.register({"id": "old"}).status_code == 401
        assert proc.register({"id": "new"}, token="rotated-" + TOKEN).ok
        token_file.write_text("")
        proc.signal(signal.SIGHUP)
        line = proc.wait_for(lambda line: "event=token_not_rotated" in line)
        assert "the file is empty" in line
        assert "the file is empty" in proc.status()["token_error"]
        assert proc.register({"id": "kept"}, token="rotated-" + TOKEN).ok  # never open
        assert proc.register({"id": "open"}, token="").status_code == 401
        token_file.unlink()
        proc.signal(signal.SIGHUP)
        proc.wait_for(lambda line: "event=token_not_rotated" in line and "api-token" in line)
    finally:
        assert proc.stop() == 0
    assert not any("event=restart_needed" in line for line in proc.lines)
    assert "rotated-" + TOKEN not in "\n".join(proc.lines)


def test_a_reload_names_each_front_end_section_that_needs_a_restart(
    consul: ConsulTarget, tmp_path: Path
):
    config = tmp_path / "capsync.toml"
    config.write_text("[api]\nmax_messages = 50\n")
    proc = PushDaemon(consul, tmp_path, "--config", str(config)).started()
    try:
        assert proc.status()["front_ends"] == {"http": {"address": proc.address}}
        config.write_text('[api]\nmax_messages = 10\n\n[grpc]\nlisten = "127.0.0.1:0"\n')
        proc.signal(signal.SIGHUP)
        proc.wait_for(lambda line: "event=reloaded" in line)
    finally:
        assert proc.stop() == 0
    needed = {
        line.split("key=")[1].split()[0] for line in proc.lines if "event=restart_needed" in line
    }
    assert needed == {"api", "grpc"}


def test_an_inbox_full_of_expired_rows_lists_only_the_live_ones(tmp_path: Path):
    """Expired rows kept for purging are neither listed nor synced; a lease that runs out
    still removes its entry; the metrics count the expired rows; a row past the purge
    horizon is purged."""
    now = time.time()
    inbox = SqliteInbox(tmp_path / "inbox.db")
    inbox.put(
        [Registration(f"gone-{i}", {"id": f"gone-{i}"}, "rest", now - 60) for i in range(2000)]
        + [Registration("ancient", {"id": "ancient"}, "rest", now - PURGE_AFTER - 60)]
    )
    inbox.close()
    with ConsulDouble() as double:
        target = ConsulTarget(double.address, double)
        proc = PushDaemon(target, tmp_path, "--interval", "1s").started()
        try:
            assert proc.register({"id": "forever"}).ok
            assert proc.register({"id": "short"}, ttl=2).ok
            wait_until(lambda: set(target.services()) == {"forever", "short"})
            wait_until(lambda: set(target.services()) == {"forever"}, timeout=15)
            text = proc.get("/metrics").text
        finally:
            assert proc.stop() == 0
    assert value(text, "capsync_inbox_registrations", source="push", state="live") == 1
    assert value(text, "capsync_inbox_registrations", source="push", state="expired") == 2001
    assert value(text, "capsync_lease_expiries_total", source="push") == 1
    inbox = SqliteInbox(tmp_path / "inbox.db")
    try:
        assert inbox.get("ancient") is None and len(inbox.all()) == 2002
    finally:
        inbox.close()
