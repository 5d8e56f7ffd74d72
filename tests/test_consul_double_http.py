"""The Consul double's HTTP plumbing, test controls and process entry point.

Sources cited per test: /work/shared/design/CONSUL-API.md ("API.md §...") or the Consul
source file mirrored; the test controls come from the double's brief.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.doubles.consul import ConsulDouble

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def consul() -> Iterator[ConsulDouble]:
    with ConsulDouble() as double:
        yield double


def get(double: ConsulDouble, path: str, **params: str) -> requests.Response:
    return requests.get(double.url + path, params=params, timeout=10)


def test_unknown_paths_and_methods(consul: ConsulDouble) -> None:
    # API.md §General: 404 for unknown /v1/ paths; 405 with an Allow header (agent/http.go wrap).
    unknown = get(consul, "/v1/nope")
    assert (unknown.status_code, unknown.text) == (
        404,
        "Invalid URL path: not a recognized HTTP API endpoint\n",
    )
    wrong = requests.post(consul.url + "/v1/catalog/register", json={}, timeout=10)
    assert (wrong.status_code, wrong.text) == (405, "method POST not allowed")
    assert wrong.headers["Allow"] == "OPTIONS,PUT"
    options = requests.options(consul.url + "/v1/kv/x", timeout=10)
    assert (options.status_code, options.headers["Allow"]) == (200, "OPTIONS,GET,PUT,DELETE")


@pytest.mark.parametrize(
    ("params", "headers", "text"),
    [
        (
            {"ns": "team"},
            {},
            'Invalid query parameter: "ns" - Namespaces are a Consul Enterprise feature',
        ),
        (
            {},
            {"X-Consul-Namespace": "team"},
            'Invalid header: "X-Consul-Namespace" - Namespaces are a Consul Enterprise feature',
        ),
    ],
    ids=["query", "header"],
)
def test_namespaces_are_enterprise_only(
    consul: ConsulDouble, params: dict[str, str], headers: dict[str, str], text: str
) -> None:
    # API.md §General: ?ns= or X-Consul-Namespace is 400 (agent/enterprise_http_ce.go wording).
    response = requests.get(
        consul.url + "/v1/catalog/services", params=params, headers=headers, timeout=10
    )
    assert (response.status_code, response.text) == (400, text)


def test_other_datacenter_has_no_path(consul: ConsulDouble) -> None:
    # agent/structs/errors.go ErrNoDCPath: a ?dc= the agent cannot forward to.
    response = get(consul, "/v1/catalog/services", dc="dc9")
    assert (response.status_code, response.text) == (500, "No path to datacenter")


def test_status_leader_and_agent_self(consul: ConsulDouble) -> None:
    # API.md §Status and agent.
    assert get(consul, "/v1/status/leader").json() == "127.0.0.1:8300"
    config = get(consul, "/v1/agent/self").json()["Config"]
    assert config["Datacenter"] == "dc1" and config["NodeName"] == "consul-double"
    assert config["Version"] == "1.21.0" and config["NodeID"]


def test_pretty_json(consul: ConsulDouble) -> None:
    # API.md §General: compact JSON, `?pretty` indents (agent/http.go marshalJSON).
    assert get(consul, "/v1/status/leader").text == '"127.0.0.1:8300"'
    assert get(consul, "/v1/catalog/services", pretty="").text.startswith('{\n    "consul"')


def test_request_log_and_counts(consul: ConsulDouble) -> None:
    # Brief: the double records (method, path) of every request.
    get(consul, "/v1/kv/a", recurse="")
    requests.put(consul.url + "/v1/kv/a", timeout=10)
    assert consul.requests[-2:] == [("GET", "/v1/kv/a"), ("PUT", "/v1/kv/a")]
    assert consul.count("PUT", "/v1/kv/") == 1 and consul.count(path_prefix="/v1/kv") == 2
    consul.reset_counts()
    assert consul.count() == 0


def test_fault_injection(consul: ConsulDouble) -> None:
    # Brief: fail_requests / delay_requests / clear_faults for the fault tests.
    consul.fail_requests(count=2)
    for _ in range(2):
        failed = get(consul, "/v1/status/leader")
        assert (failed.status_code, failed.text) == (500, "rpc error: No cluster leader")
    assert get(consul, "/v1/status/leader").status_code == 200
    consul.fail_requests(503, "down")
    assert get(consul, "/v1/status/leader").status_code == 503
    consul.clear_faults()
    consul.delay_requests(0.3)
    with pytest.raises(requests.Timeout):
        requests.get(consul.url + "/v1/status/leader", timeout=0.1)
    consul.clear_faults()
    assert get(consul, "/v1/status/leader").status_code == 200


def test_stop_cuts_keep_alive_clients_and_is_idempotent() -> None:
    # Brief: stop() closes the socket and may be called twice; a client holding a keep-alive
    # connection must see the agent gone, as it would a dead agent.
    double = ConsulDouble().start()
    with requests.Session() as client:
        assert client.get(double.url + "/v1/status/leader", timeout=2).ok
        double.stop()
        double.stop()
        with pytest.raises(requests.ConnectionError):
            client.get(double.url + "/v1/status/leader", timeout=2)


@contextlib.contextmanager
def standalone(*args: str) -> Iterator[str]:
    """`python -m tests.doubles.consul --port 0 ARGS`: its URL while it runs; it must exit 0
    on SIGTERM having printed nothing else."""
    command = [sys.executable, "-m", "tests.doubles.consul", "--port", "0", *args]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        try:
            yield url
        finally:
            proc.terminate()
        assert proc.wait(timeout=10) == 0
        assert proc.stdout.read() == ""


def test_module_entry_point_prints_url_and_exits_cleanly() -> None:
    # Brief: `python -m tests.doubles.consul --port 0` prints the URL it bound, exits 0 on TERM.
    with standalone("--max-txn-ops", "64") as url:
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        assert requests.get(url + "/v1/status/leader", timeout=5).json() == "127.0.0.1:8300"
        ops = [{"KV": {"Verb": "get", "Key": f"k{i}"}} for i in range(65)]
        too_many = requests.put(url + "/v1/txn", json=ops, timeout=5)
        assert too_many.text == "Transaction contains too many operations (65 > 64)"


def test_command_line_fault_flag() -> None:
    """`python -m tests.doubles.consul --fault JSON` (faults.py) starts with the fault in
    place; a bad one is a usage error (exit 2) naming the field."""
    fault = {"path": "/v1/catalog/services", "status": 429, "headers": {"Retry-After": "1"}}
    with standalone("--fault", json.dumps({**fault, "times": 1})) as url:
        limited = requests.get(url + "/v1/catalog/services", timeout=5)
        assert (limited.status_code, limited.headers["Retry-After"]) == (429, "1")
        assert requests.get(url + "/v1/catalog/services", timeout=5).status_code == 200
    bad = subprocess.run(
        [sys.executable, "-m", "tests.doubles.consul", "--fault", '{"delay": -1}'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert bad.returncode == 2
    assert "--fault: invalid fault: delay: Input should be greater than or equal to 0" in (
        bad.stderr
    )
