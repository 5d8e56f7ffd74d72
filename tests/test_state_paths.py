"""Default state paths follow systemd's $STATE_DIRECTORY, then /var/lib/capsync; the
top-level help names every registry kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.registry.table import REGISTRY_KINDS
from tests.conftest import run_cli

CONFIG = """
[registry]
backend = "sqlite"
[[sources]]
type = "push"
[[sources]]
type = "amqp"
url = "amqp://guest:guest@127.0.0.1:5672/"
[amqp_events]
enabled = true
url = "amqp://guest:guest@127.0.0.1:5672/"
"""


def state_paths(config: dict) -> dict[str, str]:
    push, amqp = config["sources"]
    return {
        "registry": config["registry"]["path"],
        "release": config["registry"]["release_file"],
        "push inbox": push["path"],
        "amqp inbox": amqp["path"],
        "outbox": config["amqp_events"]["outbox"],
        "validations": config["daemon"]["validations"],
    }


@pytest.mark.parametrize(
    ("state_directory", "directory"),
    [("/srv/capsync-state", "/srv/capsync-state"), ("/a:/b", "/a"), ("", "/var/lib/capsync")],
    ids=["set", "several", "unset"],
)
def test_default_paths_follow_the_state_directory(
    tmp_path: Path, state_directory: str, directory: str
) -> None:
    (tmp_path / "capsync.toml").write_text(CONFIG)
    result = run_cli(
        "config", "check", str(tmp_path / "capsync.toml"), env={"STATE_DIRECTORY": state_directory}
    )
    assert result.returncode == 0, result.stderr
    assert state_paths(json.loads(result.stdout)) == {
        "registry": f"{directory}/registry.db",
        "release": f"{directory}/release-deletions",
        "push inbox": f"{directory}/inbox.db",
        "amqp inbox": f"{directory}/amqp-inbox.db",
        "outbox": f"{directory}/amqp-outbox.db",
        "validations": f"{directory}/validations.cache",
    }


def test_a_configured_path_is_kept(tmp_path: Path) -> None:
    (tmp_path / "capsync.toml").write_text(CONFIG.replace('"sqlite"', '"sqlite"\npath = "/x.db"'))
    result = run_cli(
        "config", "check", str(tmp_path / "capsync.toml"), env={"STATE_DIRECTORY": "/srv"}
    )
    assert json.loads(result.stdout)["registry"]["path"] == "/x.db"


def test_top_level_help_names_every_registry_kind() -> None:
    result = run_cli("--help")
    text = " ".join(result.stdout.split())
    for kind in REGISTRY_KINDS.kinds:
        assert kind in text, kind
