"""Shared test fixtures: an isolated environment and a way to run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.consul_target",
    "tests.services",
    "tests.backends",
    "tests.docker_engine",
    "tests.rabbitmq",
    "tests.prometheus",
    "tests.container_image",
]

ROOT = Path(__file__).resolve().parent.parent
SEED_LABEL = (
    '{"id":"rust-worker","static_analysis_tools":'
    '[{"tool_name":"clippy","required":true,"alternatives":[]}]}'
)
# The seed's CRD spec (integration-guide.md, "Kubernetes Integration").
SEED_CRD_SPEC = {
    "id": "rust-worker-1",
    "staticAnalysisTools": [
        {"toolName": "clippy", "required": True, "alternatives": []},
        {"toolName": "rustfmt", "required": False, "alternatives": ["cargo-fmt"]},
    ],
    "securityScanningTools": [{"toolName": "cargo-audit", "required": True}],
    "flags": {"ast_support": True, "llm_support": True},
    "metadata": {"version": "1.0.0", "platform": "linux"},
}
ISOLATED_PREFIXES = (
    "CONSUL_",
    "CAPSYNC_",
    "DOCKER_",
    "KUBECONFIG",
    "NOTIFY_SOCKET",
    "WATCHDOG_",
    "REDIS_URL",
    "PG",
)


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's Consul, Docker or capsync settings by accident."""
    for name in list(os.environ):
        if name.startswith(ISOLATED_PREFIXES):
            monkeypatch.delenv(name)
    yield


def child_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a capsync child: none of the developer's Consul, Docker or
    capsync settings, and no /etc/capsync/capsync.toml (an empty default config)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ISOLATED_PREFIXES)}
    return {**env, "CAPSYNC_CONFIG": os.devnull, **(extra or {})}


def run_cli(
    *args: str,
    input: str | bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run `capsync ARGS` as a user would, in a child process, and capture its output."""
    child_env = child_environment(env)
    data = input.encode() if isinstance(input, str) else input
    proc = subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args],
        check=False,
        input=data,
        capture_output=True,
        env=child_env,
        cwd=ROOT,
        timeout=timeout,
    )
    return subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )
