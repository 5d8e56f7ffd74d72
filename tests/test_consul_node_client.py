"""An independent Consul client (the npm ``consul`` package, run by Node) against the double.

capsync's own client (python-consul2) is not a witness for the double: these are the
queries a consumer of capsync's registry makes, through a client capsync did not write,
against a fleet capsync synced: the catalog with a tag filter and ``filter`` expressions,
health with ``passing``, the inbox in KV, and blocking queries on ``index``. The answers
are the ones Consul's documentation (and ../shared/design/CONSUL-API.md) describes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from discovery.consul.client import ConsulEndpoint
from discovery.inbox import Registration
from discovery.inbox_consul import ConsulInbox
from tests.conftest import run_cli
from tests.doubles.consul import ConsulDouble
from tests.services import missing
from tests.test_sync_contract import write_fleet

CLIENT = Path(__file__).resolve().parent / "consul_client"
OWNER, SERVICE = "fleet", "worker"
NODE = f"capsync-{OWNER}"
ANSWER_SECONDS = 60  # a reply that has not come by then is a hang, not a slow answer


@dataclass
class NodeConsul:
    """query.js: one request a line in, one answer a line out, in order."""

    process: subprocess.Popen[str]

    def send(self, call: str, **opts: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"call": call, "opts": opts}) + "\n")
        self.process.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "the Node client ended without answering"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, call: str, **opts: Any) -> dict[str, Any]:
        self.send(call, **opts)
        return self.receive()


@pytest.fixture
def consul() -> Iterator[ConsulDouble]:
    with ConsulDouble() as double:
        yield double


@pytest.fixture
def client(consul: ConsulDouble) -> Iterator[NodeConsul]:
    node = shutil.which("node")
    if node is None:
        missing("node (Debian: nodejs)")
    if not (CLIENT / "node_modules" / "consul").is_dir():
        missing(f"the npm consul client (npm ci --prefix {CLIENT})")
    host, port = consul.address.split(":")
    with subprocess.Popen(
        [node, str(CLIENT / "query.js"), host, port],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        yield NodeConsul(process)
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=ANSWER_SECONDS)


def sync(consul: ConsulDouble, fleet: Path, count: int) -> None:
    write_fleet(fleet, count)
    result = run_cli(
        "run", "--once", "--owner", OWNER, "--service", SERVICE, "--source", f"file:{fleet}",
        env={"CONSUL_HTTP_ADDR": consul.address},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.fixture
def fleet(consul: ConsulDouble, tmp_path: Path) -> Path:
    """w-0000..w-0005 synced by capsync: afl++ on 0 and 3, llm_support on 0, 2 and 4,
    pool p0..p4 (see write_fleet)."""
    sync(consul, tmp_path / "fleet", 6)
    return tmp_path / "fleet"


def ids(answer: dict[str, Any]) -> list[str]:
    assert answer.get("status") == 200, answer
    return [item["ServiceID"] for item in answer["body"]]


def test_the_catalog_lists_the_service_and_filters_by_tag(client: NodeConsul, fleet: Path) -> None:
    services = client.ask("catalog.service.list")
    assert services["status"] == 200
    assert set(services["body"]) == {"consul", SERVICE}
    assert {"clippy", "rustfmt", "cargo-fmt", "afl++"} <= set(services["body"][SERVICE])
    everyone = client.ask("catalog.service.nodes", service=SERVICE)
    assert ids(everyone) == [f"w-000{i}" for i in range(6)]
    assert {item["Node"] for item in everyone["body"]} == {NODE}
    assert ids(client.ask("catalog.service.nodes", service=SERVICE, tag="afl++")) == [
        "w-0000",
        "w-0003",
    ]
    # Tags match without regard to case, as Consul's tag filter does.
    assert ids(client.ask("catalog.service.nodes", service=SERVICE, tag="AFL++")) == [
        "w-0000",
        "w-0003",
    ]
    assert client.ask("catalog.service.nodes", service="nobody")["body"] == []


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('ServiceMeta["flag-llm_support"] == "true"', ["w-0000", "w-0002", "w-0004"]),
        ('"afl++" in ServiceTags and ServiceMeta.pool == "p3"', ["w-0003"]),
        ('ServiceMeta.static_analysis contains "clippy!"', [f"w-000{i}" for i in range(6)]),
        ('ServiceID matches "^w-000[45]$" or "afl++" not in ServiceTags', ["w-0001", "w-0002",
                                                                          "w-0004", "w-0005"]),
        (f'NodeMeta["capsync-owner"] != "{OWNER}"', []),
    ],
)  # fmt: skip
def test_filter_expressions_select_what_consul_would(
    client: NodeConsul, fleet: Path, expression: str, expected: list[str]
) -> None:
    assert ids(client.ask("catalog.service.nodes", service=SERVICE, filter=expression)) == expected


def test_a_bad_filter_expression_is_a_500_the_client_reports(
    client: NodeConsul, fleet: Path
) -> None:
    answer = client.ask("catalog.service.nodes", service=SERVICE, filter="ServiceMeta ==")
    assert answer["status"] == 500
    assert answer["body"].startswith("Failed to create boolean expression evaluator: ")
    assert answer["error"] == "internal server error"  # the client's words for a long body


def register_check(consul: ConsulDouble, service_id: str, status: str) -> None:
    """What consul-esm or an operator does: a catalog check on one of capsync's entries."""
    body = {
        "Node": NODE,
        "SkipNodeUpdate": True,
        "Check": {
            "CheckID": f"probe:{service_id}",
            "Name": "worker probe",
            "ServiceID": service_id,
            "Status": status,
        },
    }
    response = requests.put(f"{consul.url}/v1/catalog/register", json=body, timeout=10)
    assert response.status_code == 200, response.text


def test_health_passing_leaves_out_an_instance_with_a_failing_check(
    consul: ConsulDouble, client: NodeConsul, fleet: Path
) -> None:
    every = client.ask("health.service", service=SERVICE)
    assert [item["Service"]["ID"] for item in every["body"]] == [f"w-000{i}" for i in range(6)]
    # capsync's one check per entry, passing (a file worker has no other health signal)
    assert [[(c["CheckID"], c["Status"]) for c in item["Checks"]] for item in every["body"]] == [
        [(f"capsync:w-000{i}", "passing")] for i in range(6)
    ]
    assert every["body"][0]["Node"]["Node"] == NODE

    register_check(consul, "w-0001", "critical")
    passing = client.ask("health.service", service=SERVICE, passing=True)
    assert [item["Service"]["ID"] for item in passing["body"]] == [
        "w-0000", "w-0002", "w-0003", "w-0004", "w-0005"
    ]  # fmt: skip
    all_again = client.ask("health.service", service=SERVICE)
    [failing] = [item for item in all_again["body"] if item["Service"]["ID"] == "w-0001"]
    assert sorted((c["CheckID"], c["Status"]) for c in failing["Checks"]) == [
        ("capsync:w-0001", "passing"),
        ("probe:w-0001", "critical"),
    ]
    tagged = client.ask("health.service", service=SERVICE, passing=True, tag="afl++")
    assert [item["Service"]["ID"] for item in tagged["body"]] == ["w-0000", "w-0003"]


def test_kv_get_reads_the_inbox_capsync_wrote(consul: ConsulDouble, client: NodeConsul) -> None:
    inbox = ConsulInbox(ConsulEndpoint(address=consul.address), "capsync/inbox")
    body = {"id": "Rust-Worker", "static_analysis_tools": [{"tool_name": "clippy"}]}
    inbox.put([Registration("Rust-Worker", body, "rest", expires=2_000_000_000.0)])
    inbox.close()

    entry = client.ask("kv.get", key="capsync/inbox/rust-worker")["body"]  # one key: one object
    assert entry["Key"] == "capsync/inbox/rust-worker"
    stored = json.loads(entry["Value"])  # the client decodes base64 to text
    assert stored["body"] == body and stored["via"] == "rest"
    listing = client.ask("kv.get", key="capsync/inbox/", recurse=True)["body"]
    assert [item["Key"] for item in listing] == ["capsync/inbox/rust-worker"]
    raw = client.ask("kv.get", key="capsync/inbox/rust-worker", raw=True)
    assert raw["status"] == 200
    absent = client.ask("kv.get", key="capsync/inbox/nobody")
    assert (absent["status"], absent["body"]) == (404, None)  # the client's "no such key"


def test_blocking_queries_wake_on_capsync_writes_and_time_out_unchanged(
    consul: ConsulDouble, client: NodeConsul, fleet: Path
) -> None:
    first = client.ask("catalog.service.nodes", service=SERVICE)
    index = int(first["index"])
    client.send("catalog.service.nodes", service=SERVICE, index=str(index), wait="60s")
    sync(consul, fleet, 7)  # capsync adds w-0006 while the query blocks
    woken = client.receive()
    assert int(woken["index"]) > index
    assert ids(woken)[-1] == "w-0006"

    # Nothing changes: after `wait` the answer is the same data with the same index.
    quiet = client.ask("catalog.service.nodes", service=SERVICE, index=woken["index"], wait="1s")
    assert (quiet["index"], ids(quiet)) == (woken["index"], ids(woken))

    health = client.ask("health.service", service=SERVICE, passing=True)
    client.send("health.service", service=SERVICE, passing=True, index=health["index"], wait="60s")
    register_check(consul, "w-0006", "critical")
    woken = client.receive()
    assert int(woken["index"]) > int(health["index"])
    assert "w-0006" not in [item["Service"]["ID"] for item in woken["body"]]


def test_a_blocking_kv_get_wakes_when_the_inbox_entry_changes(
    consul: ConsulDouble, client: NodeConsul
) -> None:
    inbox = ConsulInbox(ConsulEndpoint(address=consul.address), "capsync/inbox")
    inbox.put([Registration("w1", {"id": "w1"}, "rest")])
    first = client.ask("kv.get", key="capsync/inbox/w1")
    client.send("kv.get", key="capsync/inbox/w1", index=first["index"], wait="60s")
    inbox.put([Registration("w1", {"id": "w1", "flags": {"gpu": True}}, "rest")])
    inbox.close()
    woken = client.receive()
    assert int(woken["index"]) > int(first["index"])
    entry = woken["body"]
    assert entry["ModifyIndex"] == int(woken["index"])
    assert json.loads(entry["Value"])["body"]["flags"] == {"gpu": True}
