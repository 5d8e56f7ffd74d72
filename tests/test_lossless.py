"""What a worker declared is what every registry holds (issue 24): fleets in the library's
full form with case variants, padded and repeated names, self-alternatives and dotted
metadata keys, synced into every registry kind and read back through the CLI; each
query answers as the library's functions do, names compared exactly, and case folded
only on request (capsync's ``--ignore-case``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from daemon.query import Query, select
from daemon.registry.base import Registry
from tests.backends import Backend
from tests.conftest import run_cli
from tests.seed_library import (
    NAME_VARIANTS,
    library_hash,
    oracle_has_capability,
    oracle_provides,
    variant_fleet,
)
from tests.test_sync_contract import find, sync

ASKED = (*NAME_VARIANTS, "Cargo-Clippy", "cargo-clippy", "semgrep", "Semgrep", "afl++", "pytest")
CONSUL_ONLY_REFUSED = {"dotted"}  # its metadata keys break Consul's meta key rule only


def write(directory: Path, workers: list[dict[str, Any]]) -> None:
    directory.mkdir(exist_ok=True)
    for worker in workers:
        (directory / f"{worker['id']}.json").write_text(json.dumps(worker))


def held(backend: Backend, workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The workers this registry kind takes: Consul refuses what its meta rules forbid."""
    refused = CONSUL_ONLY_REFUSED if backend.consul is not None else set()
    return [w for w in workers if w["id"] not in refused]


def ids(workers: list[dict[str, Any]], keep: Any) -> list[str]:
    return sorted(w["id"] for w in workers if keep(w))


def test_every_registry_holds_exactly_what_was_declared(backend: Backend, tmp_path: Path):
    now = int(time.time())
    workers = variant_fleet(now)
    write(tmp_path / "fleet", workers)

    result = sync(backend, "--source", f"file:{tmp_path / 'fleet'}")

    kept = held(backend, workers)
    assert f"{len(kept)} created" in result.stdout, result.stdout + result.stderr
    if backend.consul is not None:
        # Refused by this registry alone, with the id and the rule; the rest written.
        assert result.returncode == 1
        assert "dotted" in result.stderr and "'app.version'" in result.stderr
        assert "[A-Za-z0-9_-]" in result.stderr
    else:
        assert result.returncode == 0, result.stderr

    listed = run_cli("list", *backend.args(), "--json", env=backend.env())
    assert listed.returncode == 0, listed.stderr
    read_back = {item["id"]: item["declaration"] for item in json.loads(listed.stdout)}
    assert read_back == {w["id"]: w for w in kept}  # field order aside, equal to the input
    for declaration in read_back.values():  # the library's capability_hash still verifies
        for field_name, tools in declaration.items():
            for tool in tools if field_name.endswith("_tools") else ():
                if tool["attestation"] is not None:
                    assert tool["attestation"]["capability_hash"] == library_hash(tool)
    for worker in kept[:2]:
        for flag in ((), ("--json",)):
            shown = run_cli("show", worker["id"], *flag, *backend.args(), env=backend.env())
            assert shown.returncode == 0, shown.stderr
            assert [item["declaration"] for item in json.loads(shown.stdout)] == [worker]

    # Through the CLI, a few; every name through the same registry and query code.
    assert find(backend, "--has", "Clippy") == ["variant-1"]
    assert find(backend, "--has", "clippy", "--ignore-case") == ids(
        kept, lambda w: oracle_provides(w, "clippy", now, fold=True)
    )
    assert find(backend, "--flag", "LLM_support") == ids(
        kept, lambda w: w["flags"].get("LLM_support", False)
    )
    assert find(backend, "--meta", "Version=2.0.0") == ["case-pair"]
    with backend.opened() as registry:
        for name in ASKED:
            for fold in (False, True):
                has = Query(has=(name,), now=now, ignore_case=fold)
                assert answer(registry, has) == ids(
                    kept, lambda w, n=name, f=fold: oracle_provides(w, n, now, fold=f)
                ), (name, fold)
            category = Query(category="static_analysis", tools=(name,), now=now)
            assert answer(registry, category) == ids(
                kept,
                lambda w, n=name: oracle_has_capability(w, "static_analysis", n.__eq__, now),
            ), name
        assert answer(registry, Query(meta=(("version", "2.0.0"),))) == []
        dotted = Query(meta=(("app.version", "1.2.3"),), flags=("llm_support",))
        assert answer(registry, dotted) == ids(kept, lambda w: w["id"] == "dotted")


def answer(registry: Registry, q: Query) -> list[str]:
    return sorted(caps.id for _, _, caps in select(registry, q))


def test_consul_tags_name_tools_exactly(backend: Backend, tmp_path: Path):
    now = int(time.time())
    write(tmp_path / "fleet", variant_fleet(now, consul_meta=False))
    assert sync(backend, "--source", f"file:{tmp_path / 'fleet'}").returncode == 0
    services = backend.services()
    assert {"Clippy", "Cargo-Clippy"} <= set(services["variant-1"].tags)
    assert "clippy" not in services["variant-1"].tags
    assert {" clippy ", "clippy"} <= set(services["variant-2"].tags)
    # The live Semgrep, not its expired lower-case twin.
    assert {"Semgrep", "AFL++", "afl++"} <= set(services["case-pair"].tags)
    assert "semgrep" not in services["case-pair"].tags
    if backend.consul is not None:
        found = backend.consul.get(
            f"/v1/catalog/service/{backend.service}", filter='"Clippy" in ServiceTags'
        )
        assert [s["ServiceID"] for s in found] == ["variant-1"]


def test_entries_an_earlier_version_normalised_are_rewritten_once(backend: Backend, tmp_path: Path):
    declared = [
        {"id": "plain", "static_analysis_tools": [{"tool_name": "clippy"}]},
        {"id": "cased", "static_analysis_tools": [{"tool_name": "Clippy"}]},
        {
            "id": "selfalt",
            "static_analysis_tools": [{"tool_name": "rustfmt", "alternatives": ["rustfmt"]}],
        },
    ]
    # What an earlier version wrote for them: trimmed, lower-cased, self-alternative dropped.
    normalised = [
        declared[0],
        {"id": "cased", "static_analysis_tools": [{"tool_name": "clippy"}]},
        {"id": "selfalt", "static_analysis_tools": [{"tool_name": "rustfmt"}]},
    ]
    write(tmp_path / "fleet", normalised)
    assert sync(backend, "--source", f"file:{tmp_path / 'fleet'}").returncode == 0
    write(tmp_path / "fleet", declared)

    again = sync(backend, "--source", f"file:{tmp_path / 'fleet'}")

    assert "0 created, 2 updated, 0 deleted, 1 unchanged" in again.stdout, again.stdout
    steady = sync(backend, "--source", f"file:{tmp_path / 'fleet'}")
    assert "0 updated" in steady.stdout and "3 unchanged" in steady.stdout
    listed = run_cli("list", *backend.args(), "--json", env=backend.env())
    read_back = {item["id"]: item["declaration"] for item in json.loads(listed.stdout)}
    assert read_back["cased"]["static_analysis_tools"][0]["tool_name"] == "Clippy"
    assert read_back["selfalt"]["static_analysis_tools"][0]["alternatives"] == ["rustfmt"]
