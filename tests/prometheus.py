"""A private Prometheus server for the tests (recipe: shared/design/SERVICES.md), and
promtool.

Debian's ``prometheus`` package gives both. The server is started once per session, on a
free loopback port in a temporary directory, with capsync's shipped alert rules; it
scrapes whatever ``scrape`` names (a file_sd target file it re-reads by itself) every
second and evaluates the rules every second. It is stopped by its PID. Without the
package the tests that need it skip, except under CI=true, where they fail
(tests/check.sh installs it).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.services import free_port, missing

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
MONITORING = Path(__file__).resolve().parent.parent / "config" / "monitoring"
RULES = MONITORING / "capsync.rules.yml"
DASHBOARD = MONITORING / "capsync.dashboard.json"
JOB = "capsync"


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    if not Path(PROMTOOL).exists():
        missing(f"promtool: {PROMTOOL} is not installed (Debian: prometheus)")
    return subprocess.run(
        [PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


@dataclass
class Prometheus:
    directory: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / "prometheus.log"

    def start(self) -> None:
        targets = self.directory / "targets.json"
        targets.write_text("[]")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": JOB, "file_sd_configs": [{"files": [str(targets)]}]}],
        }
        (self.directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={self.directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise RuntimeError(
                    f"prometheus exited with {code}:\n{self.log.read_text()[-2000:]}"
                )
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"prometheus not ready in 30s:\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def scrape(self, *addresses: str) -> None:
        """Scrape exactly these host:port targets from now on (file_sd re-reads the file
        on change; written whole, then renamed into place)."""
        path = self.directory / "targets.json"
        staged = path.with_suffix(".tmp")
        staged.write_text(json.dumps([{"targets": list(addresses)}]))
        staged.replace(path)

    def api(self, path: str, **params: str) -> Any:
        response = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def target_health(self, address: str) -> str:
        for target in self.api("targets")["activeTargets"]:
            if target["labels"].get("instance") == address:
                return str(target["health"])
        return "absent"


@pytest.fixture(scope="session")
def prometheus() -> Iterator[Prometheus]:
    if not Path(PROMETHEUS).exists():
        missing(f"Prometheus: {PROMETHEUS} is not installed (Debian: prometheus)")
    with tempfile.TemporaryDirectory(prefix="capsync-prometheus-") as directory:
        server = Prometheus(Path(directory))
        try:
            server.start()
            yield server
        finally:
            server.stop()
