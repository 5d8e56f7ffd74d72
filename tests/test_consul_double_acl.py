"""ACLs on the Consul double (default deny). Sources: API.md §ACL; acl/errors.go,
agent/http.go (token lookup), agent/consul/catalog_endpoint.go (vetRegisterWithACL)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.doubles.consul import ConsulDouble

TOKEN = "s3cr3t-management"
REGISTER: dict[str, Any] = {"Node": "n1", "Address": "10.0.0.1", "Service": {"Service": "web"}}


@pytest.fixture
def consul() -> Iterator[ConsulDouble]:
    with ConsulDouble(acl_token=TOKEN) as double:
        assert requests.put(
            double.url + "/v1/catalog/register",
            json=REGISTER,
            headers={"X-Consul-Token": TOKEN},
            timeout=10,
        ).ok
        yield double


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({"token": TOKEN}, {}),
        ({}, {"X-Consul-Token": TOKEN}),
        ({}, {"Authorization": f"Bearer {TOKEN}"}),
    ],
    ids=["query", "header", "bearer"],
)
def test_management_token_from_each_place(
    consul: ConsulDouble, params: dict[str, str], headers: dict[str, str]
) -> None:
    # API.md §ACL: token from ?token=, else X-Consul-Token, else Authorization: Bearer.
    response = requests.put(
        consul.url + "/v1/kv/k", data=b"v", params=params, headers=headers, timeout=10
    )
    assert (response.status_code, response.json()) == (200, True)


def test_anonymous_writes_are_denied(consul: ConsulDouble) -> None:
    # API.md §ACL: anonymous 403 `Permission denied: anonymous token lacks permission ...`.
    cases = [
        ("/v1/catalog/register", {"json": REGISTER}, "'service:write' on \"web\""),
        (
            "/v1/catalog/register",
            {"json": {"Node": "n2", "Address": "a"}},
            "'node:write' on \"n2\"",
        ),
        ("/v1/kv/app/x", {"data": b"v"}, "'key:write' on \"app/x\""),
        ("/v1/session/create", {"json": {}}, "'session:write' on \"consul-double\""),
    ]
    for path, body, permission in cases:
        response = requests.put(consul.url + path, timeout=10, **body)  # type: ignore[arg-type]
        assert response.status_code == 403
        assert response.text == f"Permission denied: anonymous token lacks permission {permission}"


def test_unknown_token_is_acl_not_found(consul: ConsulDouble) -> None:
    # API.md §ACL: 403 `ACL not found` for an unknown token, on reads and writes alike.
    for method, path in (("GET", "/v1/catalog/services"), ("PUT", "/v1/kv/k")):
        response = requests.request(
            method, consul.url + path, headers={"X-Consul-Token": "nope"}, timeout=10
        )
        assert (response.status_code, response.text) == (403, "ACL not found")


def test_anonymous_reads_are_filtered(consul: ConsulDouble) -> None:
    # API.md §ACL: with default deny, anonymous reads are filtered (empty lists, 404 on KV).
    requests.put(consul.url + "/v1/kv/k", data=b"v", params={"token": TOKEN}, timeout=10)
    assert requests.get(consul.url + "/v1/catalog/service/web", timeout=10).json() == []
    assert requests.get(consul.url + "/v1/catalog/services", timeout=10).json() == {}
    assert requests.get(consul.url + "/v1/catalog/nodes", timeout=10).json() == []
    assert requests.get(consul.url + "/v1/catalog/node-services/n1", timeout=10).json() == {
        "Node": None,
        "Services": None,
    }
    assert requests.get(consul.url + "/v1/kv/k", timeout=10).status_code == 404
    assert requests.get(consul.url + "/v1/status/leader", timeout=10).json() == "127.0.0.1:8300"
    visible = requests.get(
        consul.url + "/v1/catalog/service/web", params={"token": TOKEN}, timeout=10
    )
    assert [e["Node"] for e in visible.json()] == ["n1"]


def test_anonymous_txn_write_is_a_409_per_op(consul: ConsulDouble) -> None:
    # agent/consul/txn_endpoint.go preCheck: ACL refusals are per-op errors in the 409 body.
    ops: list[Any] = [
        {"KV": {"Verb": "set", "Key": "k"}},
        {"Node": {"Verb": "set", "Node": {"Node": "n9", "Address": "a"}}},
    ]
    response = requests.put(consul.url + "/v1/txn", json=ops, timeout=10)
    assert response.status_code == 409
    assert response.json()["Errors"] == [
        {
            "OpIndex": 0,
            "What": "Permission denied: anonymous token lacks permission 'key:write' on \"k\"",
        },
        {
            "OpIndex": 1,
            "What": "Permission denied: anonymous token lacks permission 'node:write' on \"n9\"",
        },
    ]
