"""Registry scenarios through the CLI, run against every registry (tests/backends.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from discovery.normalise import normalise
from discovery.sources.file import FileSource
from tests.backends import Backend
from tests.conftest import ROOT, run_cli

EXAMPLES = ROOT / "config" / "examples" / "workers"


def sync(backend: Backend, *args: str, env: dict[str, str] | None = None):
    return run_cli("run", "--once", *backend.args(), *args, env={**backend.env(), **(env or {})})


def write_fleet(directory: Path, count: int) -> None:
    directory.mkdir(exist_ok=True)
    for i in range(count):
        declaration = {
            "id": f"w-{i:04}",
            "static_analysis_tools": [
                {"tool_name": "clippy", "required": True},
                {"tool_name": "rustfmt", "alternatives": ["cargo-fmt"]},
            ],
            "fuzzing_tools": [{"tool_name": "afl++"}] if i % 3 == 0 else [],
            "flags": {"llm_support": i % 2 == 0},
            "metadata": {"pool": f"p{i % 5}"},
        }
        (directory / f"w-{i:04}.json").write_text(json.dumps(declaration))


def copy_examples(tmp_path: Path) -> Path:
    fleet = tmp_path / "fleet"
    shutil.copytree(EXAMPLES, fleet)
    return fleet


def test_cold_sync_noop_update_delete(backend: Backend, tmp_path: Path):
    fleet = tmp_path / "fleet"
    write_fleet(fleet, 300)

    result = sync(backend, "--source", f"file:{fleet}")
    assert result.returncode == 0, result.stderr
    assert "300 created" in result.stdout
    entries = backend.services()
    assert len(entries) == 300
    w0 = entries["w-0000"]
    assert w0.tags == ("afl++", "cargo-fmt", "clippy", "rustfmt")
    assert w0.meta["static_analysis"] == "clippy!,rustfmt|cargo-fmt"
    assert w0.meta["capsync-ref"] == str(fleet / "w-0000.json")

    result = sync(backend, "--source", f"file:{fleet}")
    assert "300 unchanged" in result.stdout and "(0 write requests)" in result.stdout

    (fleet / "w-0007.json").write_text(json.dumps({"id": "w-0007", "flags": {"gpu": True}}))
    result = sync(backend, "--source", f"file:{fleet}")
    assert "1 updated" in result.stdout and "299 unchanged" in result.stdout
    assert backend.services()["w-0007"].meta["flag-gpu"] == "true"
    assert backend.services()["w-0007"].tags == ()

    (fleet / "w-0008.json").unlink()
    result = sync(backend, "--source", f"file:{fleet}")
    assert "1 deleted" in result.stdout
    assert "w-0008" not in backend.services() and len(backend.services()) == 299


def test_other_owners_entries_never_touched(backend: Backend, tmp_path: Path):
    other = backend.another_owner()
    assert sync(other, "--source", f"file:{EXAMPLES}").returncode == 0
    theirs = other.services()
    result = sync(backend, "--source", f"file:{EXAMPLES}")
    assert result.returncode == 0
    # Redis and PostgreSQL hold one key or row per id: the ids are the other writer's.
    store = backend.name in ("redis", "postgres")
    mine = 0 if store else 9
    assert f"{mine} created" in result.stdout
    if store:
        assert "event=conflict id=rust-worker-1" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = sync(backend, "--source", f"file:{empty}", "--allow-mass-delete")
    assert f"{mine} deleted" in result.stdout
    assert backend.services() == {} and other.services() == theirs


def expected_ids(query) -> list[str]:
    found, _ = normalise(FileSource(EXAMPLES).list(), "file")
    return sorted(item.caps.id for item in found if query(item.caps))


def find(backend: Backend, *args: str) -> list[str]:
    result = run_cli("find", *backend.args(), *args, "--json", env=backend.env())
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert all({"id", "node", "source", "declaration"} <= set(item) for item in out)
    return sorted(item["id"] for item in out)


def test_find_answers_the_seed_semantics(backend: Backend):
    assert sync(backend, "--source", f"file:{EXAMPLES}").returncode == 0
    assert (
        find(backend, "--category", "static_analysis", "--tool", "clippy")
        == expected_ids(
            lambda c: c.has_capability("static_analysis", lambda t: t == "clippy", now=0)
        )
        == ["fuzz-worker-2", "rust-worker-1", "rust-worker-2"]
    )
    # by an alternative: cargo-fmt is rustfmt's alternative on rust-worker-1
    assert find(backend, "--category", "static_analysis", "--tool", "cargo-fmt") == [
        "rust-worker-1"
    ]
    # clippy is a fuzzing worker's static tool, not a fuzzing tool
    assert find(backend, "--category", "fuzzing", "--tool", "clippy") == []
    assert find(backend, "--category", "fuzzing", "--tool", "AFL++", "honggfuzz") == [
        "fuzz-worker-1",
        "fuzz-worker-2",
    ]
    assert find(backend, "--has", "semgrep", "bandit") == ["python-worker-1"]
    assert find(backend, "--flag", "llm_support") == expected_ids(
        lambda c: c.has_flag("llm_support")
    )
    assert find(backend, "--meta", "pool=security") == ["security-worker-1"]
    assert find(backend, "--has", "clippy", "cargo-audit", "--all-required") == expected_ids(
        lambda c: (
            c.has_all_required_tools(lambda t: t in {"clippy", "cargo-audit"}, now=0)
            and {"clippy", "cargo-audit"} <= set(c.all_tools())
        )
    )
    listed = run_cli("list", *backend.args(), env=backend.env())
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 1 + 9
    shown = run_cli("show", "rust-worker-1", *backend.args(), env=backend.env())
    assert json.loads(shown.stdout)[0]["declaration"]["flags"] == {
        "ast_support": True,
        "llm_support": True,
    }
    assert run_cli("show", "nobody", *backend.args(), env=backend.env()).returncode == 1


def test_plan_prints_and_writes_nothing(backend: Backend):
    result = run_cli("plan", *backend.args(), "--source", f"file:{EXAMPLES}", env=backend.env())
    assert result.returncode == 0, result.stderr
    assert any(
        line.split()[:2] == ["create", "rust-worker-1"] for line in result.stdout.splitlines()
    )
    assert "plan: 9 created" in result.stdout
    assert backend.services() == {}
    as_json = run_cli(
        "plan", *backend.args(), "--source", f"file:{EXAMPLES}", "--json", env=backend.env()
    )
    plan = json.loads(as_json.stdout)
    assert plan["summary"]["create"] == 9
    assert {c["id"] for c in plan["changes"]} >= {"rust-worker-1", "go-worker-1"}


@pytest.mark.parametrize(
    ("policy", "created", "updated", "deleted"),
    [("sync", 1, 1, 1), ("upsert-only", 1, 1, 0), ("create-only", 1, 0, 0)],
)
def test_policies(
    backend: Backend, tmp_path: Path, policy: str, created: int, updated: int, deleted: int
):
    fleet = copy_examples(tmp_path)
    assert sync(backend, "--source", f"file:{fleet}").returncode == 0
    (fleet / "go-worker-1.yaml").unlink()
    (fleet / "rust-worker-2.json").write_text('{"id": "rust-worker-2", "flags": {"x": true}}')
    (fleet / "new.json").write_text('{"id": "new-worker"}')
    result = sync(backend, "--source", f"file:{fleet}", "--policy", policy)
    assert result.returncode == 0, result.stderr
    assert f"{created} created, {updated} updated, {deleted} deleted" in result.stdout
    assert ("go-worker-1" in backend.services()) is (deleted == 0)


def test_mass_deletion_guard(backend: Backend, tmp_path: Path):
    fleet = copy_examples(tmp_path)
    assert sync(backend, "--source", f"file:{fleet}").returncode == 0
    for path in sorted(fleet.iterdir())[:6]:
        path.unlink()
    result = sync(backend, "--source", f"file:{fleet}")
    assert result.returncode == 0
    assert "6 held" in result.stdout and "0 deleted" in result.stdout
    assert "event=deletions_held count=6" in result.stderr
    assert len(backend.services()) == 9
    result = sync(backend, "--source", f"file:{fleet}", "--allow-mass-delete")
    assert "6 deleted" in result.stdout and len(backend.services()) == 3


def test_failed_source_freezes_its_entries_and_gates_deletions(backend: Backend, tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_fleet(a, 3)
    b.mkdir()
    (b / "b1.json").write_text('{"id": "b-1"}')
    assert sync(backend, "--source", f"file:{a}", "--source", f"file:{b}").returncode == 0
    assert backend.services()["b-1"].source == "file-2"

    shutil.rmtree(b)  # source file-2 now fails
    (a / "w-0000.json").unlink()  # a deletion in the healthy source: held, first-sync gate
    (a / "w-0001.json").write_text('{"id": "w-0001", "flags": {"changed": true}}')
    result = sync(backend, "--source", f"file:{a}", "--source", f"file:{b}")
    assert result.returncode == 1
    assert "event=source_failed source=file-2" in result.stderr
    assert "1 updated" in result.stdout and "1 held" in result.stdout
    entries = backend.services()
    assert {"b-1", "w-0000"} <= set(entries)
    assert entries["w-0001"].meta["flag-changed"] == "true"


def test_invalid_declaration_keeps_its_entry(backend: Backend, tmp_path: Path):
    fleet = copy_examples(tmp_path)
    assert sync(backend, "--source", f"file:{fleet}").returncode == 0
    before = backend.services()
    (fleet / "go-worker-1.yaml").write_text("id: go-worker-1\nflags: {x: maybe}\n")
    (fleet / "rust-worker-2.json").write_text('{"id": "rust-worker-2",')
    result = sync(backend, "--source", f"file:{fleet}")
    assert result.returncode == 0
    assert "2 invalid" in result.stdout and "2 kept" in result.stdout
    assert "event=invalid_declaration source=file" in result.stderr
    assert "field=flags.x" in result.stderr
    assert backend.services() == before


@pytest.mark.parametrize("second", ["shared", "SHARED"], ids=["same", "case-only"])
def test_same_id_from_two_sources_first_wins(backend: Backend, tmp_path: Path, second: str):
    """Ids compare case-insensitively: ``SHARED`` is the same worker, a stable conflict."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x.json").write_text('{"id": "shared", "flags": {"from_a": true}}')
    (b / "y.json").write_text(json.dumps({"id": second, "flags": {"from_b": True}}))
    for _ in range(2):  # no churn across cycles
        result = sync(backend, "--source", f"file:{a}", "--source", f"file:{b}")
        assert result.returncode == 0
        assert f"event=conflict id={second} source=file-2" in result.stderr
        assert "0 updated" in result.stdout and "0 deleted" in result.stdout
        assert list(backend.services()) == ["shared"]
        assert backend.services()["shared"].meta["flag-from_a"] == "true"


def test_units_with_different_services_on_one_node_coexist(backend: Backend, tmp_path: Path):
    """Ownership is owner and service: two units on one host, same owner, each its own
    service, leave each other's entries alone, and neither takes over the other's ids."""
    write_fleet(tmp_path / "b", 3)
    other = backend.with_service("analysis")
    assert "9 created" in sync(backend, "--source", f"file:{EXAMPLES}").stdout
    assert "3 created" in sync(other, "--source", f"file:{tmp_path / 'b'}").stdout
    mine, theirs = backend.services(), other.services()

    again = sync(backend, "--source", f"file:{EXAMPLES}")
    assert "0 deleted" in again.stdout and "9 unchanged" in again.stdout
    assert "3 unchanged" in sync(other, "--source", f"file:{tmp_path / 'b'}").stdout

    clash = sync(other, "--source", f"file:{EXAMPLES}", "--allow-mass-delete")
    assert clash.stderr.count("event=conflict") == 9
    assert backend.services() == mine and set(other.services()) == set()
    assert len(theirs) == 3


def test_quickstart_config(tmp_path: Path):
    config = (ROOT / "config/examples/quickstart.toml").read_text()
    local = tmp_path / "quickstart.toml"
    local.write_text(
        config.replace('"var/quickstart.db"', f'"{tmp_path / "q.db"}"').replace(
            '"config/examples/workers"', f'"{EXAMPLES}"'
        )
    )
    first = run_cli("run", "--once", "--config", str(local))
    assert first.returncode == 0 and "9 created" in first.stdout
    second = run_cli("run", "--once", "--config", str(local))
    assert "9 unchanged" in second.stdout and "(0 write requests)" in second.stdout
    found = run_cli(
        "find", "--config", str(local), "--category", "static_analysis", "--tool", "clippy"
    )
    assert [line.split()[0] for line in found.stdout.splitlines()[1:]] == [
        "fuzz-worker-2",
        "rust-worker-1",
        "rust-worker-2",
    ]
