"""`capsync validate` through the real command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from discovery import codec, schema
from tests.conftest import SEED_CRD_SPEC, SEED_LABEL, run_cli

CRD_MANIFEST = {
    "apiVersion": "valkra.io/v1",
    "kind": "WorkerCapabilities",
    "metadata": {"name": "rust-worker-1"},
    "spec": SEED_CRD_SPEC,
}


def test_seed_label_from_stdin() -> None:
    result = run_cli("validate", input=SEED_LABEL)
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok rust-worker\n", "")


def test_seed_crd_spec_as_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "rust.yaml"
    path.write_text(yaml.safe_dump(CRD_MANIFEST["spec"]))
    result = run_cli("validate", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok rust-worker-1\n"


def test_battery_reports_each_and_keeps_valid_ones(tmp_path: Path) -> None:
    (tmp_path / "good.json").write_text(SEED_LABEL)
    (tmp_path / "typo.json").write_text('{"id": "w1", "static_analysis_tool": []}')
    (tmp_path / "name.json").write_text(
        '{"id": "w2", "fuzzing_tools": [{"tool_name": "afl\\tlibfuzzer"}]}'
    )
    (tmp_path / "reserved.yaml").write_text("id: w3\nmetadata:\n  capsync-owner: me\n")
    (tmp_path / "long.json").write_text(json.dumps({"id": "w4", "metadata": {"v": "x" * 513}}))
    (tmp_path / "many.json").write_text(
        json.dumps({"id": "w5", "metadata": {f"k{i}": "v" for i in range(64)}})
    )
    (tmp_path / "broken.json").write_text('{"id": "w6",')
    (tmp_path / "huge.json").write_text(json.dumps({"id": "w7", "pad": "x" * 70_000}))
    (tmp_path / "latin1.json").write_bytes(b'{"id": "caf\xe9"}')
    (tmp_path / "fleet.json").write_text(json.dumps([{"id": "ok-1"}, {"id": "bad id"}]))
    (tmp_path / "notes.txt").write_text("ignored: not a declaration file")

    result = run_cli("validate", str(tmp_path))

    assert result.returncode == 1
    lines = result.stdout.splitlines()
    # Only Consul's meta rules refuse a long value or 64 pairs: the declaration is valid.
    assert {"ok rust-worker", "ok ok-1", "ok w4", "ok w5"} <= set(lines)
    expected = {
        "typo.json": "static_analysis_tool: unknown field",
        "name.json": "fuzzing_tools[0].tool_name: tool name 'afl\\tlibfuzzer' contains the control",
        "reserved.yaml": "metadata.capsync-owner (key): key 'capsync-owner' is reserved",
        "broken.json": "malformed JSON at line 1",
        "huge.json": "a declaration may be at most 65536 bytes",
        "latin1.json": "not valid UTF-8",
        "fleet.json[1]": "id: id 'bad id' must be",
    }
    for ref, text in expected.items():
        assert any(
            line.startswith(f"error {tmp_path / ref}: ") and text in line for line in lines
        ), (ref, lines)
    assert "Traceback" not in result.stderr
    assert len(lines) == 4 + len(expected)


def test_json_output(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(SEED_LABEL)
    (tmp_path / "b.json").write_text('{"id": "b", "flags": {"x": "yes"}}')
    result = run_cli("validate", "--json", str(tmp_path))
    assert result.returncode == 1
    out = json.loads(result.stdout)
    assert out[0]["id"] == "rust-worker"
    # The library's full serde form: the minimal label gets its defaults, and an expiry
    # that never passes.
    assert out[0]["static_analysis_tools"] == [
        {
            "tool_name": "clippy",
            "required": True,
            "alternatives": [],
            "attestation": None,
            "permissions": {
                "filesystem_access": False,
                "network_access": False,
                "process_spawn": False,
                "env_access": False,
                "system_access": False,
                "memory_limit_mb": 128,
                "cpu_limit_percent": 50,
                "timeout_seconds": 30,
            },
            "expiration": {
                "expires_at": 2**53 - 1,
                "revoked": False,
                "revocation_reason": None,
                "revoked_at": None,
                "revoked_by": None,
            },
            "verified": False,
        }
    ]
    assert out[1] == {
        "ref": str(tmp_path / "b.json"),
        "errors": [{"loc": "flags.x", "msg": "Input should be a valid boolean"}],
    }


def test_format_consul_fits_limits_and_decodes_back(tmp_path: Path) -> None:
    (tmp_path / "rust.yaml").write_text(yaml.safe_dump(SEED_CRD_SPEC))
    result = run_cli(
        "validate",
        "--format",
        "consul",
        "--service",
        "analysis",
        "--owner",
        "ci-1",
        str(tmp_path / "rust.yaml"),
    )
    assert result.returncode == 0, result.stderr
    [fields] = json.loads(result.stdout)
    assert fields["Service"] == "analysis" and fields["ID"] == "rust-worker-1"
    assert fields["Meta"]["capsync-owner"] == "ci-1"
    assert fields["Weights"] == {"Passing": 1, "Warning": 1}
    assert len(fields["Meta"]) <= 64
    assert all(len(k) <= 128 and len(v) <= 512 for k, v in fields["Meta"].items())
    entry = codec.Entry(fields["ID"], fields["Service"], tuple(fields["Tags"]), fields["Meta"])
    assert codec.decode(entry) == schema.validate(SEED_CRD_SPEC, ref="t")


def test_format_consul_reports_what_only_consul_would_refuse(tmp_path: Path) -> None:
    (tmp_path / "ok.json").write_text('{"id": "ok", "metadata": {"app_version": "1"}}')
    (tmp_path / "dotted.json").write_text('{"id": "dotted", "metadata": {"app.version": "1"}}')
    assert run_cli("validate", str(tmp_path)).returncode == 0  # valid: others take it
    result = run_cli("validate", "--format", "consul", str(tmp_path))
    assert result.returncode == 1
    assert [fields["ID"] for fields in json.loads(result.stdout)] == ["ok"]
    assert result.stderr.strip() == (
        f"error {tmp_path / 'dotted.json'}: Consul would refuse it: meta key 'app.version': "
        "Consul meta keys are [A-Za-z0-9_-] only"
    )


def test_hostile_stdin_inputs_give_one_error_each() -> None:
    cases = {
        b"[" * 20_000: "nested more than 32 levels deep",
        b'{"id": "w", "metadata": {"k": "a\\u0000b"}}': "metadata.k: U+0000",
        b'{"id": "w\\ud800"}': "id: not valid Unicode: lone surrogate U+D800",
        b'{"id": ' + b"1" * 10_000 + b"}": "a number is too long",
        b'{"id": "a\x00b"}': "malformed JSON",
        b"\xff\xfe{}": "not valid UTF-8",
        b'{"id": "a", "id": "b"}': "duplicate key 'id'",
    }
    for data, text in cases.items():
        result = run_cli("validate", input=data)
        assert result.returncode == 1
        assert result.stdout.count("\n") == 1 and text in result.stdout, result.stdout
        assert "Traceback" not in result.stderr


# A few hundred bytes of nested aliases: 9**9 nodes once expanded.
LAUGHS = "id: w\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (LAUGHS, "expands to more than 100000 nodes"),
        ("id: w\nx: &x [*x]\n", "an alias refers to a node that contains it"),
        (
            "id: w\n"
            + "".join(f"k{i}: &k{i} 1\n" for i in range(120))
            + "l: ["
            + ", ".join(f"*k{i}" for i in range(120))
            + "]\n",
            "more than 100 aliases",
        ),
        ("id: w\nx: " + "[" * 70 + "]" * 70 + "\n", "nested deeper than 64 levels"),
    ],
    ids=["laughs", "recursive", "aliases", "depth"],
)
def test_yaml_over_its_limits_is_one_invalid_declaration_never_a_hang(
    tmp_path: Path, text: str, reason: str
) -> None:
    (tmp_path / "bomb.yaml").write_text(text)
    (tmp_path / "fine.yaml").write_text("id: fine\nx: &x [1, 2]\ny: *x\n")
    result = run_cli("validate", str(tmp_path))
    assert result.returncode == 1
    [line] = [line for line in result.stdout.splitlines() if "bomb.yaml" in line]
    assert "YAML over its limits" in line and reason in line, result.stdout
    assert "Traceback" not in result.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run_cli("validate", str(tmp_path / "missing")).returncode == 2
    assert run_cli("validate", "--format", "xml").returncode == 2


def test_version_and_help() -> None:
    assert run_cli("--version").stdout.startswith("capsync ")
    help_text = run_cli("--help").stdout
    assert "validate" in help_text


def test_every_nul_and_lone_surrogate_is_reported_with_its_path_and_text_that_looks_so_is_not(
    tmp_path: Path,
) -> None:
    """Strings are checked in one pass first and walked only when that pass sees a
    NUL or a lone surrogate: each is still reported, with its path, wherever it is (a
    key, a nested value, metadata, a YAML file); an escape that merely looks like one
    (a backslash written out) and a character beyond the BMP pass."""
    bad = (
        '{"id": "w", "flags": {"a\\u0000b": true}, "static_analysis_tools": '
        '[{"tool_name": "t", "alternatives": ["x", "y\\udc01"]}], '
        '"metadata": {"k\\ud800": "v", "ok": "\\u0000"}}'
    )
    result = run_cli("validate", input=bad)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "error <stdin>: flags.a\\u0000b (key): U+0000 (NUL) is not allowed in any string",
        "error <stdin>: static_analysis_tools[0].alternatives[1]: not valid Unicode: lone "
        "surrogate U+DC01 (an unpaired \\u escape)",
        "error <stdin>: metadata.k? (key): not valid Unicode: lone surrogate U+D800 (an "
        "unpaired \\u escape)",
        "error <stdin>: metadata.ok: U+0000 (NUL) is not allowed in any string",
    ]
    looks_bad = (
        '{"id": "w", "metadata": {"smile": "\\ud83d\\ude00", "text": "a\\\\u0000 \\\\ud800"}}'
    )
    assert run_cli("validate", input=looks_bad).stdout == "ok w\n"
    (tmp_path / "w.yaml").write_text('id: w\nmetadata:\n  pool: "a\\0b"\n')
    result = run_cli("validate", str(tmp_path / "w.yaml"))
    assert result.returncode == 1
    assert result.stdout == (
        f"error {tmp_path / 'w.yaml'}: metadata.pool: U+0000 (NUL) is not allowed in any string\n"
    )
