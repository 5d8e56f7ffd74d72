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
    # API.md §ACL: with default deny, anonymous listings are filtered (empty lists).
    requests.put(consul.url + "/v1/kv/k", data=b"v", params={"token": TOKEN}, timeout=10)
    assert requests.get(consul.url + "/v1/catalog/service/web", timeout=10).json() == []
    assert requests.get(consul.url + "/v1/catalog/services", timeout=10).json() == {}
    assert requests.get(consul.url + "/v1/catalog/nodes", timeout=10).json() == []
    assert requests.get(consul.url + "/v1/catalog/node-services/n1", timeout=10).json() == {
        "Node": None,
        "Services": None,
    }
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


def test_single_key_read_without_permission_is_403(consul: ConsulDouble) -> None:
    """agent/consul/kvs_endpoint.go KVS.Get: KeyReadAllowed is checked on the key asked for,
    whether it exists or not, so a single-key GET is refused (403), never a 404; KVS.List
    and KVS.ListKeys filter instead (FilterDirEnt)."""
    requests.put(consul.url + "/v1/kv/app/k", data=b"v", params={"token": TOKEN}, timeout=10)
    denied = "Permission denied: anonymous token lacks permission 'key:read' on "
    for key in ("app/k", "app/missing"):
        response = requests.get(consul.url + f"/v1/kv/{key}", timeout=10)
        assert (response.status_code, response.text) == (403, denied + f'"{key}"')
    listing = requests.get(consul.url + "/v1/kv/app/", params={"recurse": ""}, timeout=10)
    assert listing.status_code == 404
    keys = requests.get(consul.url + "/v1/kv/", params={"keys": ""}, timeout=10)
    assert (keys.status_code, keys.json()) == (200, [])
    allowed = requests.get(consul.url + "/v1/kv/app/missing", params={"token": TOKEN}, timeout=10)
    assert allowed.status_code == 404


@pytest.mark.parametrize(
    ("default_token", "status", "body"),
    [
        ("", 403, "Permission denied: anonymous token lacks permission 'key:write' on \"k\""),
        (TOKEN, 200, "true"),
        ("stale-default", 403, "ACL not found"),
    ],
    ids=["anonymous", "management", "unknown"],
)
def test_no_token_means_the_agents_default_token(
    default_token: str, status: int, body: str
) -> None:
    """agent/http.go parseTokenWithDefault: a request without ?token, X-Consul-Token or a
    Bearer token carries the agent's UserToken (acl.tokens.default, agent/token/store.go),
    which the servers resolve like any other; "" is the anonymous token."""
    with ConsulDouble(acl_token=TOKEN, default_token=default_token) as double:
        response = requests.put(double.url + "/v1/kv/k", data=b"v", timeout=10)
        assert (response.status_code, response.text) == (status, body)
        explicit = requests.put(
            double.url + "/v1/kv/k", data=b"v", headers={"X-Consul-Token": TOKEN}, timeout=10
        )
        assert (explicit.status_code, explicit.json()) == (200, True)


def test_default_token_is_ignored_without_acls() -> None:
    """agent/consul/acl.go: with ACLs disabled every token, the default one included,
    resolves to allow-all."""
    with ConsulDouble(default_token="whatever") as double:
        response = requests.put(double.url + "/v1/kv/k", data=b"v", timeout=10)
        assert (response.status_code, response.json()) == (200, True)
