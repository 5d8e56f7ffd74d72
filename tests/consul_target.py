"""The Consul the tests talk to: the double always, and a real agent when one is around.

A real agent is used when CONSUL_HTTP_ADDR was set when the suite started, or when a
`consul` binary is on PATH (started as `consul agent -dev`). Assertions that count HTTP
requests need the double's request log and are made only against it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from tests.doubles.consul import ConsulDouble

REAL_ADDR = os.environ.get("CONSUL_HTTP_ADDR")
CONSUL_BIN = shutil.which("consul")
TARGETS = ["double"] + (["agent"] if REAL_ADDR or CONSUL_BIN else [])


@dataclass
class ConsulTarget:
    address: str
    double: ConsulDouble | None = None
    owner: str = field(default_factory=lambda: f"t-{uuid.uuid4().hex[:8]}")
    service: str = "worker"
    token: str | None = None  # sent on the test's own reads, as an operator would

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def node(self) -> str:
        return f"capsync-{self.owner}"

    def env(self, **extra: str) -> dict[str, str]:
        return {"CONSUL_HTTP_ADDR": self.address, **extra}

    def writes(self) -> int:
        assert self.double is not None, "request counts need the double"
        return self.double.count("PUT")

    def get(self, path: str, **params: str) -> Any:
        response = requests.get(self.url + path, params=params, headers=self._headers(), timeout=10)
        response.raise_for_status()
        return response.json()

    def put(self, path: str, body: Any) -> requests.Response:
        return requests.put(self.url + path, json=body, headers=self._headers(), timeout=10)

    def _headers(self) -> dict[str, str]:
        return {"X-Consul-Token": self.token} if self.token else {}

    def retag_by_hand(self, service_id: str, tags: list[str]) -> None:
        """Change the tags of one of our instances as an operator would (the catalog
        API), its meta kept."""
        declared = self.services()[service_id]
        tampered = {
            "Node": self.node,
            "Address": declared["Address"],
            "SkipNodeUpdate": True,
            "Service": {
                "ID": service_id,
                "Service": self.service,
                "Tags": tags,
                "Meta": declared["ServiceMeta"],
            },
        }
        assert self.put("/v1/catalog/register", tampered).status_code == 200

    def services(self) -> dict[str, Any]:
        """id -> catalog entry of every instance of our service on our node."""
        items = self.get(f"/v1/catalog/service/{self.service}")
        return {item["ServiceID"]: item for item in items if item["Node"] == self.node}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def real_agent() -> Iterator[str | None]:
    if REAL_ADDR or not CONSUL_BIN:
        yield REAL_ADDR
        return
    port = _free_port()
    proc = subprocess.Popen(
        [CONSUL_BIN, "agent", "-dev", f"-http-port={port}", "-dns-port=-1", "-grpc-port=-1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://{address}/v1/status/leader", timeout=1).json():
                break
        except requests.RequestException:
            pass
        time.sleep(0.2)
    yield address
    proc.terminate()
    proc.wait(10)


@contextmanager
def open_target(kind: str, request: pytest.FixtureRequest) -> Iterator[ConsulTarget]:
    if kind == "agent":
        yield ConsulTarget(request.getfixturevalue("real_agent"))
        return
    with ConsulDouble() as double:
        yield ConsulTarget(double.address, double)


@pytest.fixture(params=TARGETS)
def consul(request: pytest.FixtureRequest) -> Iterator[ConsulTarget]:
    with open_target(request.param, request) as target:
        yield target


def needs_double(target: ConsulTarget) -> None:
    if target.double is None:
        pytest.skip("counts requests: only the double keeps a request log")
