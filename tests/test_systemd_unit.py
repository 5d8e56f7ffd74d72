"""The systemd unit and its example environment file.

systemd-analyze (Debian package ``systemd``; it runs without a running systemd) checks
that the unit parses cleanly and that its sandboxing scores an exposure of 2.5 or lower.
Without it the checks that need it skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "capsync.service"
ENV_FILE = ROOT / "systemd" / "capsync.env"

BINARY = "/opt/capsync/venv/bin/capsync"
EXEC_START = f"{BINARY} run --config /etc/capsync/capsync.toml --log-format json"
MAX_EXPOSURE = 2.5

Sections = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Sections:
    """systemd's unit syntax: sections, repeatable keys, whole-line comments, and
    backslash continuations. An empty assignment (``Key=``) is kept as ``""``; systemd
    reads it as "reset the list", so the last value of a list setting is what counts."""
    sections: Sections = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], defaultdict(list))
            continue
        assert current is not None, f"setting outside a section: {raw!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a Key=value line: {raw!r}"
        current[key.strip()].append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> Sections:
    return parse_unit(UNIT.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def service(unit: Sections) -> dict[str, list[str]]:
    return unit["Service"]


@pytest.fixture(scope="module")
def analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        message = "systemd-analyze not found: apt-get install systemd (Debian package)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_analyze(analyze: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(
        [analyze, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def own_lines(output: str, path: Path) -> list[str]:
    """The lines systemd-analyze prints about this unit (prefixed with its file path or
    its unit name); anything else is about other units on this machine."""
    return [line for line in output.splitlines() if line.startswith((str(path), "capsync.service"))]


def test_exec_start_is_the_fixed_interface(service: dict[str, list[str]]) -> None:
    assert service["ExecStart"] == [EXEC_START]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    # The token is never on the command line.
    assert "token" not in service["ExecStart"][0].lower()


def test_verify_is_clean(analyze: str, tmp_path: Path) -> None:
    # The unit's binary is not installed here, and verify would report that, so verify
    # a copy whose ExecStart runs a stub; everything else is byte for byte the original.
    # Only the copy's own lines are asserted on. Environment facts are not checked by
    # verify or not about this unit: it does not resolve user or group names (a missing
    # docker group shows up only at start, as status 216/GROUP), After= on units that are
    # not installed (docker.service, consul.service) is silently fine, and
    # network-online.target ships with the systemd package itself. Other units it loads
    # may print their own warnings; those lines are not ours and are ignored.
    stub = tmp_path / "capsync"
    stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    stub.chmod(0o755)
    text = UNIT.read_text(encoding="utf-8")
    assert text.count(BINARY) == 1
    text = text.replace(BINARY, str(stub))
    if not Path("/bin/kill").exists():
        # A minimal image without procps; every Debian host the unit runs on has it.
        text = text.replace("ExecReload=/bin/kill ", f"ExecReload={stub} ")
    copy = tmp_path / "units" / "capsync.service"
    copy.parent.mkdir()
    copy.write_text(text, encoding="utf-8")

    result = run_analyze(analyze, "verify", str(copy))
    output = result.stdout + result.stderr
    # verify exits 0 even for "Unknown key name ... ignoring", so the output decides.
    assert own_lines(output, copy) == [], output
    assert result.returncode == 0, output


def test_verify_original_only_misses_the_installed_binary(analyze: str) -> None:
    result = run_analyze(analyze, "verify", str(UNIT))
    output = result.stdout + result.stderr
    lines = own_lines(output, UNIT)
    if Path(BINARY).exists():
        assert lines == [], output
    else:
        assert lines == [
            f"capsync.service: Command {BINARY} is not executable: No such file or directory"
        ], output


def test_security_exposure(analyze: str) -> None:
    result = run_analyze(analyze, "security", "--offline=true", "--no-pager", str(UNIT))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    match = re.search(r"Overall exposure level for capsync\.service: (\d+\.\d+)", output)
    assert match, output
    assert float(match.group(1)) <= MAX_EXPOSURE, output


def test_service_settings(unit: Sections, service: dict[str, list[str]]) -> None:
    def last(key: str) -> str:
        assert key in service, f"{key}= missing"
        return service[key][-1]

    assert last("Type") == "notify"
    assert last("NotifyAccess") == "main"
    assert last("WatchdogSec") == "60"
    assert last("Restart") == "on-failure"
    assert last("RestartSec") == "5"
    assert last("TimeoutStopSec") == "10"
    assert last("DynamicUser") == "yes"
    assert service["SupplementaryGroups"] == ["docker"]
    assert service["LoadCredential"] == ["consul-token:/etc/capsync/consul-token"]
    assert "CONSUL_HTTP_TOKEN_FILE=%d/consul-token" in service["Environment"]
    assert service["EnvironmentFile"] == ["-/etc/capsync/capsync.env"]
    assert last("StateDirectory") == "capsync"
    assert last("RuntimeDirectory") == "capsync"
    assert last("ConfigurationDirectory") == "capsync"
    assert last("NoNewPrivileges") == "yes"
    assert last("ProtectSystem") == "strict"
    assert last("ProtectHome") == "yes"
    assert last("PrivateTmp") == "yes"
    assert last("PrivateDevices") == "yes"
    assert last("MemoryDenyWriteExecute") == "yes"
    assert last("SystemCallArchitectures") == "native"
    assert service["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert service["SystemCallFilter"][0] == "@system-service"
    denied = " ".join(v for v in service["SystemCallFilter"] if v.startswith("~"))
    assert "@privileged" in denied
    assert "@resources" in denied
    # Empty: no capabilities in the bounding set, none ambient.
    assert last("CapabilityBoundingSet") == ""
    assert last("AmbientCapabilities") == ""
    # What would break the service: the docker group unmapped, or Consul/Kubernetes
    # unreachable.
    assert service.get("PrivateUsers", ["no"])[-1] in {"no", "false", "0"}
    assert "IPAddressDeny" not in service
    assert "PrivateNetwork" not in service

    after = " ".join(unit["Unit"]["After"]).split()
    assert {"network-online.target", "docker.service", "consul.service"} <= set(after)
    assert "network-online.target" in " ".join(unit["Unit"]["Wants"]).split()
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_env_file_is_key_value_lines_without_a_token() -> None:
    lines = ENV_FILE.read_text(encoding="utf-8").splitlines()
    settings = []
    for number, line in enumerate(lines):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        # systemd's EnvironmentFile= syntax, kept simple: no "export", no spaces around
        # "=", no quoting needed.
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", line), f"line {number + 1}: {line!r}"
        # Every setting says what it does, in the comment right above it.
        assert number > 0 and lines[number - 1].startswith("#"), f"line {number + 1} uncommented"
        settings.append(line.partition("=")[0])
    assert settings, "no KEY=VALUE line at all"
    assert "CONSUL_HTTP_TOKEN" not in settings
    # Not even a commented-out example of a token.
    assert not any(re.match(r"\s*#?\s*CONSUL_HTTP_TOKEN\s*=", line) for line in lines)
