"""The double's agent service endpoints, driven by python-consul2 as the naive approach
would (agent/agent_endpoint.go AgentRegisterService; CONSUL-API.md: the agent endpoint
answers 400 `Invalid Service Meta: ...` where the catalogue answers 500)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
import requests

from tests.doubles.consul import ConsulDouble

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import consul


@pytest.fixture
def double() -> Iterator[ConsulDouble]:
    with ConsulDouble() as running:
        yield running


def client(double: ConsulDouble) -> consul.Consul:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return consul.Consul(host="127.0.0.1", port=double.port)


def test_register_lands_on_the_agent_node(double: ConsulDouble) -> None:
    assert client(double).agent.service.register(
        "worker", service_id="w-1", tags=["clippy"], meta={"pool": "a"}
    )
    [item] = requests.get(f"{double.url}/v1/catalog/service/worker", timeout=5).json()
    assert (item["Node"], item["ServiceID"], item["ServiceTags"]) == (
        "consul-double",
        "w-1",
        ["clippy"],
    )
    assert item["ServiceWeights"] == {"Passing": 1, "Warning": 1}
    local = requests.get(f"{double.url}/v1/agent/services", timeout=5).json()
    assert local["w-1"]["Meta"] == {"pool": "a"}


def test_identical_reregistration_moves_no_index(double: ConsulDouble) -> None:
    c = client(double)
    c.agent.service.register("worker", service_id="w-1", tags=["a"])
    first = requests.get(f"{double.url}/v1/catalog/service/worker", timeout=5)
    c.agent.service.register("worker", service_id="w-1", tags=["a"])
    second = requests.get(f"{double.url}/v1/catalog/service/worker", timeout=5)
    assert first.headers["X-Consul-Index"] == second.headers["X-Consul-Index"]


def test_errors_are_400(double: ConsulDouble) -> None:
    bad_meta = requests.put(
        f"{double.url}/v1/agent/service/register",
        json={"Name": "w", "Meta": {"consul-x": "1"}},
        timeout=5,
    )
    assert bad_meta.status_code == 400
    assert bad_meta.text.startswith("Invalid Service Meta: ")
    unnamed = requests.put(f"{double.url}/v1/agent/service/register", json={"ID": "x"}, timeout=5)
    assert (unnamed.status_code, unnamed.text) == (400, "Missing service name")
    unknown = requests.put(
        f"{double.url}/v1/agent/service/register", json={"Name": "w", "Service": "w"}, timeout=5
    )
    assert unknown.status_code == 400 and "unknown field" in unknown.text


def test_deregister(double: ConsulDouble) -> None:
    c = client(double)
    c.agent.service.register("worker", service_id="w-1")
    assert c.agent.service.deregister("w-1")
    assert requests.get(f"{double.url}/v1/catalog/service/worker", timeout=5).json() == []
    missing = requests.put(f"{double.url}/v1/agent/service/deregister/nope", timeout=5)
    assert missing.status_code == 404 and 'Unknown service ID "nope"' in missing.text
