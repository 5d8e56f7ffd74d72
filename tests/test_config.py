"""Settings from files and the environment, through `capsync config check`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from daemon.front_ends import FRONT_ENDS
from daemon.settings_model import SETTINGS
from tests.conftest import ROOT, run_cli
from tests.test_missing_extras import blocked


@pytest.mark.parametrize(
    "example", sorted((ROOT / "config/examples").glob("*.toml")), ids=lambda p: p.name
)
def test_examples_are_valid(example: Path) -> None:
    result = run_cli("config", "check", str(example))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sources"]


def test_every_error_with_its_key_path(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[registry]\nowner = "bad owner"\npolicy = "yolo"\n'
        '[daemon]\ninterval = "5x"\nlisten = "nowhere"\n'
        '[[sources]]\ntype = "file"\n[[sources]]\ntype = "ftp"\n'
    )
    result = run_cli("config", "check", str(config))
    assert result.returncode == 2
    for key in (
        "registry.owner",
        "registry.policy",
        "daemon.interval",
        "daemon.listen",
        "sources[0].path",
        "sources[1]",
    ):
        assert f"{config}: {key}:" in result.stderr, key


def test_environment_and_redaction(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[consul]\ntoken = "from-file"\n')
    result = run_cli(
        "config",
        "check",
        str(config),
        env={
            "CONSUL_HTTP_ADDR": "https://consul.example:8501",
            "CONSUL_HTTP_TOKEN": "sekrit-token",
            "CAPSYNC_DAEMON__INTERVAL": "90s",
            "CAPSYNC_REGISTRY__ALLOW_MASS_DELETE": "true",
            "CAPSYNC_REGISTRY__SERVICE": "analysis",
        },
    )
    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    assert effective["consul"]["address"] == "https://consul.example:8501"
    assert effective["consul"]["token"] == "<redacted>"
    assert effective["daemon"]["interval"] == 90.0
    assert effective["registry"]["allow_mass_delete"] is True
    assert effective["registry"]["service"] == "analysis"
    assert "sekrit-token" not in result.stdout + result.stderr
    assert "from-file" not in result.stdout + result.stderr


def test_missing_and_broken_files(tmp_path: Path) -> None:
    missing = run_cli("config", "check", str(tmp_path / "none.toml"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[registry\n")
    result = run_cli("config", "check", str(broken))
    assert result.returncode == 2 and "invalid TOML" in result.stderr


def test_durations(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[daemon]\ninterval = "1h30m"\nmin_gap = "500ms"\nsession_ttl = 20\n')
    daemon = json.loads(run_cli("config", "check", str(config)).stdout)["daemon"]
    assert (daemon["interval"], daemon["min_gap"], daemon["session_ttl"]) == (5400, 0.5, 20)


def test_every_front_end_in_the_table_has_its_settings_section(tmp_path: Path) -> None:
    """Each front end's own section is in the model the table derives, shown by `config
    check` with its defaults, set by its CAPSYNC_<SECTION>__<KEY> variables and checked
    with its key path; every other setting it reads exists. The gRPC section is read and
    checked without the grpc extra."""
    config = tmp_path / "c.toml"
    config.write_text("")
    shown = json.loads(run_cli("config", "check", str(config)).stdout)
    for kind in FRONT_ENDS.values():
        for key in kind.settings_keys:
            value: Any = shown
            for part in key.split("."):
                assert part in value, (kind.name, key)
                value = value[part]
        for model in kind.sections:
            assert SETTINGS.model_fields[model.section].annotation is model
            assert shown[model.section] == json.loads(model().model_dump_json())
            variable = f"CAPSYNC_{model.section.upper()}__NOT_A_SETTING"
            refused = run_cli("config", "check", str(config), env={variable: "1"})
            assert refused.returncode == 2
            assert f"{model.section}.not_a_setting: Extra inputs" in refused.stderr
    without_grpc = blocked(tmp_path, "grpc")
    config.write_text('[grpc]\nlisten = "nowhere"\n')
    refused = run_cli("config", "check", str(config), env=without_grpc)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().endswith(
        "grpc.listen: must be HOST:PORT (e.g. 127.0.0.1:9470) or 'off'"
    )
