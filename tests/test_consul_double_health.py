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


# -- GET /v1/health/node/:node (HealthNodeChecks) and txn Check ops ----------------------


def node_checks(consul: ConsulDouble, node: str, **params: str) -> requests.Response:
    return requests.get(f"{consul.url}/v1/health/node/{node}", params=params, timeout=10)


def test_node_checks_list_every_check_of_the_node_never_null(consul: ConsulDouble) -> None:
    check(consul, "a", "w2-probe", "critical", service="w2")
    check(consul, "a", "node-ok", "passing")
    check(consul, "b", "w3-probe", "passing", service="w3")
    answer = node_checks(consul, "A")  # node names compare case-insensitively
    assert answer.status_code == 200 and int(answer.headers["X-Consul-Index"]) > 0
    assert [(c["CheckID"], c["Status"], c["ServiceID"]) for c in answer.json()] == [
        ("node-ok", "passing", ""),
        ("w2-probe", "critical", "w2"),
    ]
    assert answer.json()[1]["ServiceName"] == "web"
    assert node_checks(consul, "nowhere").json() == []
    filtered = node_checks(consul, "a", filter='Status == "critical"')
    assert [c["CheckID"] for c in filtered.json()] == ["w2-probe"]
    bad = node_checks(consul, "a", filter="Status ==")
    assert bad.status_code == 500 and "Failed to create boolean expression" in bad.text


def test_node_checks_hidden_from_an_anonymous_token_say_so() -> None:
    with ConsulDouble(acl_token="root") as double:
        body = {
            "Node": "a",
            "Address": "10.0.0.1",
            "Check": {"CheckID": "c", "Name": "c", "Status": "passing"},
        }
        put = requests.put(
            f"{double.url}/v1/catalog/register",
            json=body,
            headers={"X-Consul-Token": "root"},
            timeout=10,
        )
        assert put.ok, put.text
        answer = node_checks(double, "a")
        assert answer.json() == []
        assert answer.headers.get("X-Consul-Results-Filtered-By-ACLs") == "true"


def txn(consul: ConsulDouble, ops: list[dict[str, Any]]) -> requests.Response:
    return requests.put(f"{consul.url}/v1/txn", json=ops, timeout=10)


def check_op(service: str, status: str, node: str = "a") -> dict[str, Any]:
    return {
        "Check": {
            "Verb": "set",
            "Check": {
                "Node": node,
                "CheckID": f"capsync:{service}",
                "Name": "capsync health",
                "Status": status,
                "Output": f"{service} is {status}",
                "ServiceID": service,
                "ServiceName": "web",
            },
        }
    }


def test_txn_check_set_drives_the_passing_answer(consul: ConsulDouble) -> None:
    answer = txn(consul, [check_op("w1", "warning"), check_op("w2", "passing")])
    assert answer.status_code == 200, answer.text
    results = answer.json()["Results"]
    assert [r["Check"]["CheckID"] for r in results] == ["capsync:w1", "capsync:w2"]
    assert results[0]["Check"]["ServiceName"] == "web"
    assert ids(health(consul, passing="")) == ["w2", "w3"]
    before = int(health(consul).headers["X-Consul-Index"])
    # setting the same check again writes nothing: the service's index does not move
    assert txn(consul, [check_op("w1", "warning")]).status_code == 200
    assert int(health(consul).headers["X-Consul-Index"]) == before
    assert txn(consul, [check_op("w1", "passing")]).status_code == 200
    assert int(health(consul).headers["X-Consul-Index"]) > before
    assert ids(health(consul, passing="")) == ["w1", "w2", "w3"]


def test_txn_check_on_a_missing_service_rolls_the_transaction_back(consul: ConsulDouble) -> None:
    answer = txn(consul, [check_op("w1", "critical"), check_op("ghost", "passing")])
    assert answer.status_code == 409
    assert answer.json() == {
        "Results": None,
        "Errors": [{"OpIndex": 1, "What": "Missing service registration"}],
    }
    assert ids(health(consul, passing="")) == ["w1", "w2", "w3"]  # w1 not written
    missing_node = txn(consul, [check_op("w9", "passing", node="nowhere")])
    assert missing_node.status_code == 409
    assert missing_node.json()["Errors"][0]["What"] == "Missing node registration"


def test_deregistering_a_service_removes_its_checks(consul: ConsulDouble) -> None:
    assert txn(consul, [check_op("w1", "critical")]).status_code == 200
    body = {"Node": "a", "ServiceID": "w1"}
    requests.put(f"{consul.url}/v1/catalog/deregister", json=body, timeout=10)
    assert [c["CheckID"] for c in node_checks(consul, "a").json()] == []


def test_service_checks_list_the_checks_of_the_service_s_instances(consul: ConsulDouble) -> None:
    check(consul, "a", "node-ok", "passing")  # a node check: not the service's
    check(consul, "b", "w3-probe", "critical", service="w3")
    check(consul, "a", "w1-probe", "warning", service="w1")
    answer = requests.get(f"{consul.url}/v1/health/checks/web", timeout=10)
    assert answer.status_code == 200
    assert [(c["Node"], c["CheckID"]) for c in answer.json()] == [
        ("a", "w1-probe"),
        ("b", "w3-probe"),
    ]
    missing = requests.get(f"{consul.url}/v1/health/checks/nothing", timeout=10)
    assert missing.json() == []
