"""GET /v1/health/service/:service on the Consul double.

Sources: agent/health_endpoint.go (HealthServiceNodes: getBoolQueryParam for ?passing,
filterNonPassing, Checks and the list never null), agent/consul/state/catalog.go
(parseCheckServiceNodes: the node's checks and the service's), API.md §Health checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.doubles.consul import ConsulDouble


@pytest.fixture
def consul() -> Iterator[ConsulDouble]:
    with ConsulDouble() as double:
        for node, service, tags in [("a", "w1", ["gpu"]), ("a", "w2", []), ("b", "w3", ["gpu"])]:
            body = {
                "Node": node,
                "Address": "10.0.0.1",
                "Service": {"ID": service, "Service": "web", "Tags": tags},
            }
            requests.put(f"{double.url}/v1/catalog/register", json=body, timeout=10)
        yield double


def check(consul: ConsulDouble, node: str, check_id: str, status: str, service: str = "") -> None:
    body = {
        "Node": node,
        "SkipNodeUpdate": True,
        "Check": {"CheckID": check_id, "Name": check_id, "Status": status, "ServiceID": service},
    }
    assert requests.put(f"{consul.url}/v1/catalog/register", json=body, timeout=10).ok


def health(consul: ConsulDouble, **params: str) -> requests.Response:
    return requests.get(f"{consul.url}/v1/health/service/web", params=params, timeout=10)


def ids(response: requests.Response) -> list[str]:
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return [row["Service"]["ID"] for row in rows]


def test_each_instance_comes_with_its_node_and_every_check_that_bears_on_it(
    consul: ConsulDouble,
) -> None:
    check(consul, "a", "node-ok", "passing")
    check(consul, "a", "w1-probe", "warning", service="w1")
    rows = health(consul).json()
    assert [(r["Node"]["Node"], r["Service"]["ID"]) for r in rows] == [
        ("a", "w1"),
        ("a", "w2"),
        ("b", "w3"),
    ]
    assert [c["CheckID"] for c in rows[0]["Checks"]] == ["node-ok", "w1-probe"]
    assert [c["CheckID"] for c in rows[1]["Checks"]] == ["node-ok"]
    assert rows[2]["Checks"] == []  # never null
    assert rows[0]["Service"]["Tags"] == ["gpu"] and rows[1]["Service"]["Tags"] == []


@pytest.mark.parametrize("value", ["", "true", "1", "T"])
def test_passing_keeps_only_instances_whose_checks_all_pass(
    consul: ConsulDouble, value: str
) -> None:
    check(consul, "a", "w1-probe", "warning", service="w1")
    assert ids(health(consul, passing=value)) == ["w2", "w3"]
    check(consul, "b", "serf", "critical")  # a node check fails every instance on it
    assert ids(health(consul, passing=value)) == ["w2"]
    assert ids(health(consul, passing="false")) == ["w1", "w2", "w3"]


def test_a_bad_passing_value_is_a_400(consul: ConsulDouble) -> None:
    response = health(consul, passing="maybe")
    assert (response.status_code, response.text) == (400, "Invalid value for ?passing")


def test_tags_and_filter_narrow_as_on_the_catalog(consul: ConsulDouble) -> None:
    check(consul, "b", "w3-probe", "critical", service="w3")
    assert ids(health(consul, tag="GPU")) == ["w1", "w3"]
    assert ids(health(consul, filter='Checks.Status == "critical"')) == ["w3"]
    assert ids(health(consul, filter='Node.Node == "a" and "gpu" in Service.Tags')) == ["w1"]
    bad = health(consul, filter="Checks.Nope == 1")
    assert bad.status_code == 500
    assert bad.text.startswith("Failed to create boolean expression evaluator: ")


def test_a_missing_service_is_an_empty_list_and_a_check_change_wakes_a_blocking_query(
    consul: ConsulDouble,
) -> None:
    missing = requests.get(f"{consul.url}/v1/health/service/nobody", timeout=10)
    assert (missing.status_code, missing.json()) == (200, [])
    index = int(health(consul).headers["X-Consul-Index"])
    check(consul, "a", "w2-probe", "critical", service="w2")
    woken = health(consul, index=str(index), wait="30s")
    assert int(woken.headers["X-Consul-Index"]) > index
    assert ids(health(consul, passing="")) == ["w1", "w3"]
