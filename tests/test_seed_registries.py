"""The library's full form through every registry: written, queried and read back as the
library reads it; Consul's tags and KV document; SQLite's migration; and a running
daemon taking a tool out of Consul's tags when its expiry passes."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from daemon.registry.ownership import Ownership
from daemon.registry.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteRegistry
from discovery import codec, schema
from discovery.health import UNKNOWN
from tests.backends import Backend
from tests.conftest import run_cli
from tests.consul_target import ConsulTarget
from tests.daemon_process import Daemon, wait_until
from tests.seed_library import (
    fleet,
    library_tool,
    library_worker,
    oracle_has_all_required,
    oracle_has_capability,
    oracle_has_permission,
    oracle_verified,
)
from tests.test_sync_contract import find, sync


def stable_fleet(directory: Path) -> tuple[list[dict[str, Any]], int]:
    """The differential fleet around the real clock, without the workers whose answer
    flips within seconds (an expiry equal to now)."""
    now = int(time.time())
    workers = [w for w in fleet(now) if "-edge-" not in w["id"]]
    directory.mkdir()
    for worker in workers:
        (directory / f"{worker['id']}.json").write_text(json.dumps(worker))
    return workers, now


def expected(workers: list[dict[str, Any]], keep: Any) -> list[str]:
    return sorted(w["id"] for w in workers if keep(w))


def test_full_form_round_trips_and_queries_give_the_library_answers(
    backend: Backend, tmp_path: Path
):
    workers, now = stable_fleet(tmp_path / "fleet")
    result = sync(backend, "--source", f"file:{tmp_path / 'fleet'}")
    assert result.returncode == 0, result.stderr
    assert "next expiry" in result.stdout

    listed = run_cli("list", *backend.args(), "--json", env=backend.env())
    assert listed.returncode == 0, listed.stderr
    read_back = {item["id"]: item["declaration"] for item in json.loads(listed.stdout)}
    assert read_back == {w["id"]: w for w in workers}  # every field, as serde reads it

    clippy = {"clippy"}.__contains__
    assert find(backend, "--category", "static_analysis", "--tool", "clippy") == expected(
        workers, lambda w: oracle_has_capability(w, "static_analysis", clippy, now)
    )
    assert find(backend, "--has", "semgrep") == expected(
        workers,
        lambda w: oracle_has_capability(w, "security_scanning", {"semgrep"}.__contains__, now),
    )
    assert find(backend, "--has", "clippy", "--all-required") == expected(
        workers,
        lambda w: (
            oracle_has_all_required(w, clippy, now)
            and oracle_has_capability(w, "static_analysis", clippy, now)
        ),
    )
    assert find(backend, "--verified") == expected(workers, lambda w: oracle_verified(w, now))
    for category, permission in [
        ("static_analysis", "filesystem_access"),
        ("security_scanning", "network_access"),
        ("fuzzing", "process_spawn"),
    ]:
        assert find(backend, "--permission", f"{category}:{permission}") == expected(
            workers, lambda w, c=category, p=permission: oracle_has_permission(w, c, p)
        )

    bad = run_cli(
        "find", *backend.args(), "--permission", "static_analysis:root", env=backend.env()
    )
    assert bad.returncode == 2 and "CATEGORY:PERMISSION" in bad.stderr


def test_an_expiry_change_is_an_update_and_minimal_entries_stay_as_they_were(
    backend: Backend, tmp_path: Path
):
    directory = tmp_path / "fleet"
    directory.mkdir()
    (directory / "plain.json").write_text(
        '{"id": "plain", "fuzzing_tools": [{"tool_name": "afl++"}]}'
    )
    tool = library_tool("clippy", expires_at=int(time.time()) + 3600)
    (directory / "full.json").write_text(json.dumps(library_worker("full", static_analysis=[tool])))
    assert sync(backend, "--source", f"file:{directory}").returncode == 0
    plain = backend.services()["plain"]
    assert plain.tags == ("afl++",) and codec.DOCUMENT not in plain.meta
    tool["expiration"]["expires_at"] += 60
    (directory / "full.json").write_text(json.dumps(library_worker("full", static_analysis=[tool])))
    again = sync(backend, "--source", f"file:{directory}")
    assert "1 updated" in again.stdout and "1 unchanged" in again.stdout
    shown = run_cli("show", "full", *backend.args(), env=backend.env())
    declaration = json.loads(shown.stdout)[0]["declaration"]
    assert declaration["static_analysis_tools"][0]["expiration"] == tool["expiration"]


def test_consul_tags_meta_and_the_kv_document(consul: ConsulTarget, tmp_path: Path):
    workers, now = stable_fleet(tmp_path / "fleet")
    args = ("--owner", consul.owner, "--service", consul.service)
    result = run_cli(
        "run", "--once", *args, "--source", f"file:{tmp_path / 'fleet'}", env=consul.env()
    )
    assert result.returncode == 0, result.stderr
    services = consul.services()
    expired = services["w-past-live-valid"]
    assert "clippy" not in expired["ServiceTags"] and "expired:clippy" in expired["ServiceTags"]
    assert expired["ServiceMeta"][codec.VERIFIED] == "false"
    revoked = services["w-future-revoked-none"]
    assert {"revoked:clippy", "perm:static_analysis:filesystem_access"} <= set(
        revoked["ServiceTags"]
    )
    valid = services["w-future-live-valid"]
    assert "clippy" in valid["ServiceTags"] and valid["ServiceMeta"][codec.VERIFIED] == "true"
    assert valid["ServiceMeta"][codec.NEXT_EXPIRY] == str(now + 3600)

    # A plain Consul query gives the library's answer.
    filtered = consul.get(f"/v1/catalog/service/{consul.service}", filter='"clippy" in ServiceTags')
    assert sorted(s["ServiceID"] for s in filtered if s["Node"] == consul.node) == expected(
        workers, lambda w: oracle_has_capability(w, "static_analysis", {"clippy"}.__contains__, now)
    )

    key = valid["ServiceMeta"][codec.DOCUMENT]
    assert key == f"capsync/documents/{consul.service}/{consul.owner}/w-future-live-valid"
    [stored] = consul.get(f"/v1/kv/{key}")
    document = json.loads(base64.b64decode(stored["Value"]))
    assert document == next(w for w in workers if w["id"] == "w-future-live-valid")

    # The document leaves with its entry.
    (tmp_path / "fleet" / "w-future-live-valid.json").unlink()
    result = run_cli(
        "run", "--once", *args, "--source", f"file:{tmp_path / 'fleet'}", env=consul.env()
    )
    assert "1 deleted" in result.stdout, result.stdout + result.stderr
    assert consul.put(f"/v1/kv/{key}?cas=0", "x").json() is True  # absent: cas=0 creates


def test_sqlite_version_1_file_is_migrated_keeping_its_rows(tmp_path: Path):
    path = tmp_path / "v1.db"
    with closing(sqlite3.connect(path)) as db, db:
        MIGRATIONS[1](db)
        db.execute(
            "INSERT INTO nodes VALUES ('capsync-h', '127.0.0.1', ?)",
            (json.dumps({"capsync-owner": "h"}),),
        )
        caps = schema.validate({"id": "old", "fuzzing_tools": [{"tool_name": "afl++"}]}, ref="t")
        old = codec.encode(
            caps, codec.Provenance(service="worker", owner="h", source="file", ref="/old")
        )
        db.execute(
            "INSERT INTO services (node, id, service, tags, meta, address, port) "
            "VALUES ('capsync-h', 'old', 'worker', ?, ?, '', 0)",
            (json.dumps(old.tags), json.dumps(dict(old.meta))),
        )
        db.execute("PRAGMA user_version = 1")
    registry = SqliteRegistry(path, Ownership(service="worker", owner="h", node="capsync-h"))
    try:
        owned = registry.snapshot().owned
        assert owned == {"old": old}
        assert owned["old"].health == UNKNOWN  # none kept before: the next cycle writes it
    finally:
        registry.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (3,)


def test_running_daemon_drops_a_tool_from_consul_tags_when_it_expires(
    consul: ConsulTarget, tmp_path: Path
):
    directory = tmp_path / "fleet"
    directory.mkdir()
    # Long enough that a slow daemon start still writes clippy before it expires.
    soon = library_tool("clippy", expires_at=int(time.time()) + 8)
    lasting = library_tool("rustfmt", expires_at=int(time.time()) + 3600)
    (directory / "w.json").write_text(
        json.dumps(library_worker("expiring", static_analysis=[soon, lasting]))
    )
    proc = Daemon(
        [
            "--owner",
            consul.owner,
            "--service",
            consul.service,
            "--source",
            f"file:{directory}",
            "--interval",
            "300s",
        ],
        env=consul.env(),
    ).started()
    try:
        wait_until(
            lambda: "clippy" in consul.services().get("expiring", {}).get("ServiceTags", ()), 8
        )
        wait_until(lambda: "clippy" not in consul.services()["expiring"]["ServiceTags"], 15)
        tags = consul.services()["expiring"]["ServiceTags"]
        assert "rustfmt" in tags and "expired:clippy" in tags  # the entry stays
        proc.wait_for(lambda line: "event=cycle" in line and "expiry" in line)
    finally:
        assert proc.stop() == 0


def test_a_tampered_document_key_never_points_a_delete_elsewhere(
    consul: ConsulTarget, tmp_path: Path
):
    assert consul.put("/v1/kv/precious", "keep").status_code == 200
    directory = tmp_path / "fleet"
    directory.mkdir()
    tool = library_tool("clippy", expires_at=int(time.time()) + 3600)
    (directory / "w.json").write_text(json.dumps(library_worker("w", static_analysis=[tool])))
    args = ("--owner", consul.owner, "--service", consul.service)
    assert (
        run_cli(
            "run", "--once", *args, "--source", f"file:{directory}", env=consul.env()
        ).returncode
        == 0
    )
    entry = consul.services()["w"]
    tampered = {
        "Node": consul.node,
        "Address": "127.0.0.1",
        "NodeMeta": entry["NodeMeta"],
        "Service": {
            "ID": "w",
            "Service": consul.service,
            "Tags": entry["ServiceTags"],
            "Meta": {**entry["ServiceMeta"], codec.DOCUMENT: "precious"},
        },
    }
    assert consul.put("/v1/catalog/register", tampered).status_code == 200
    (directory / "w.json").unlink()
    result = run_cli(
        "run",
        "--once",
        *args,
        "--source",
        f"file:{directory}",
        "--allow-mass-delete",
        env=consul.env(),
    )
    assert "1 deleted" in result.stdout, result.stdout + result.stderr
    [kept] = consul.get("/v1/kv/precious")
    assert base64.b64decode(kept["Value"]) == b'"keep"'
    document = f"capsync/documents/{consul.service}/{consul.owner}/w"
    assert consul.put(f"/v1/kv/{document}?cas=0", "x").json() is True  # ours is gone
