"""PUT /v1/txn on the Consul double. Sources: API.md §PUT /v1/txn; agent/txn_endpoint.go,
agent/consul/txn_endpoint.go (preCheck) and agent/consul/state/txn.go."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.doubles.consul import ConsulDouble

WEIGHTS = {"Passing": 1, "Warning": 1}


@pytest.fixture
def consul() -> Iterator[ConsulDouble]:
    with ConsulDouble() as double:
        yield double


def txn(double: ConsulDouble, ops: Any) -> requests.Response:
    return requests.put(double.url + "/v1/txn", json=ops, timeout=10)


def node_set(name: str = "capsync-me") -> dict[str, Any]:
    return {"Node": {"Verb": "set", "Node": {"Node": name, "Address": "127.0.0.1"}}}


def service_set(node: str = "capsync-me", **service: Any) -> dict[str, Any]:
    spec = {"ID": "w1", "Service": "worker", "Weights": WEIGHTS, **service}
    return {"Service": {"Verb": "set", "Node": node, "Service": spec}}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_success_shape(consul: ConsulDouble) -> None:
    # API.md §PUT /v1/txn: 200 {"Results": [...], "Errors": null}, no entry for delete verbs;
    # state/txn.go blanks the value of non-get KV results.
    response = txn(
        consul,
        [
            {"KV": {"Verb": "set", "Key": "a", "Value": b64("1")}},
            {"KV": {"Verb": "delete", "Key": "zz"}},
            {"KV": {"Verb": "get", "Key": "a"}},
            node_set(),
            service_set(Tags=["clippy"]),
        ],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["Errors"] is None
    kinds = [next(iter(result)) for result in body["Results"]]
    assert kinds == ["KV", "KV", "Node", "Service"]
    assert body["Results"][0]["KV"]["Value"] is None
    assert base64.b64decode(body["Results"][1]["KV"]["Value"]) == b"1"
    assert body["Results"][3]["Service"]["Weights"] == WEIGHTS
    assert "X-Consul-Index" not in response.headers


def test_failure_lists_every_failing_op_and_applies_nothing(consul: ConsulDouble) -> None:
    # API.md §PUT /v1/txn: 409 {"Results": null, "Errors": [...]} listing every failing op.
    response = txn(
        consul,
        [
            {"KV": {"Verb": "set", "Key": "kept-out", "Value": b64("x")}},
            {"KV": {"Verb": "cas", "Key": "c", "Index": 99, "Value": b64("x")}},
            service_set(node="ghost"),
        ],
    )
    assert response.status_code == 409
    assert response.json() == {
        "Results": None,
        "Errors": [
            {"OpIndex": 1, "What": 'failed to set key "c", index is stale'},
            {"OpIndex": 2, "What": "Missing node registration"},
        ],
    }
    assert requests.get(consul.url + "/v1/kv/kept-out", timeout=10).status_code == 404


def test_service_set_needs_the_node_first(consul: ConsulDouble) -> None:
    # API.md §PUT /v1/txn: a Node set earlier in the same transaction satisfies the service.
    assert txn(consul, [node_set(), service_set()]).status_code == 200
    entries = requests.get(consul.url + "/v1/catalog/service/worker", timeout=10).json()
    assert [e["Node"] for e in entries] == ["capsync-me"]


def test_weights_are_stored_as_to_service_node_stores_them(consul: ConsulDouble) -> None:
    """agent/txn_endpoint.go convertOps copies the api Weights value, so an omitted one is
    {0, 0}; agent/structs/structs.go NodeService.ToServiceNode then stores {1, 1} for any
    weights that fail ValidateWeights (Passing < 1, Warning < 0, over 65535), valid ones as
    given. The txn result reads the stored service back (state/txn.go txnService)."""
    ops = [
        node_set(),
        service_set(ID="a", Weights={"Passing": 3, "Warning": 0}),
        service_set(ID="b", Weights=None),
        service_set(ID="c", Weights={"Passing": 0, "Warning": 5}),
        service_set(ID="d", Weights={"Passing": 70000, "Warning": 1}),
    ]
    response = txn(consul, ops)
    assert response.status_code == 200, response.text
    defaulted = {"Passing": 1, "Warning": 1}
    expected = [{"Passing": 3, "Warning": 0}, defaulted, defaulted, defaulted]
    assert [r["Service"]["Weights"] for r in response.json()["Results"][1:]] == expected
    entries = requests.get(consul.url + "/v1/catalog/service/worker", timeout=10).json()
    assert [e["ServiceWeights"] for e in entries] == expected


def test_service_meta_validated_like_register(consul: ConsulDouble) -> None:
    # API.md §PUT /v1/txn: Service meta is validated as on catalog register.
    response = txn(consul, [node_set(), service_set(Meta={"consul-x": "1"})])
    assert response.status_code == 409
    assert response.json()["Errors"] == [
        {
            "OpIndex": 1,
            "What": (
                "Invalid Service Meta for node capsync-me and serviceID w1: Couldn't load "
                "metadata pair ('consul-x', '1'): Key prefix 'consul-' is reserved for internal use"
            ),
        }
    ]


@pytest.mark.parametrize(("limit", "status"), [(128, 200), (64, 413)])
def test_operation_limit(limit: int, status: int) -> None:
    # API.md §PUT /v1/txn: 64 operations up to 1.13, 128 from 1.14 (413 beyond).
    with ConsulDouble(max_txn_ops=limit) as double:
        ops = [{"KV": {"Verb": "set", "Key": f"k{i}", "Value": b64("v")}} for i in range(65)]
        response = txn(double, ops)
        assert response.status_code == status
        too_many = txn(double, ops * 2)
        assert (too_many.status_code, too_many.text) == (
            413,
            f"Transaction contains too many operations (130 > {limit})",
        )


DOC = "https://developer.hashicorp.com/docs/agent/config/config-files#txn_max_req_len"


def test_body_over_512_kib_is_413(consul: ConsulDouble) -> None:
    """agent/txn_endpoint.go convertOps: a Content-Length over txn_max_req_len (524288 by
    default) is 413 before anything is decoded, the text naming both sizes; exactly the
    limit is still read."""
    response = requests.put(consul.url + "/v1/txn", data=b" " * (512 * 1024 + 1), timeout=10)
    assert (response.status_code, response.text) == (
        413,
        f"Request body(524289 bytes) too large, max size: 524288 bytes. See {DOC}.",
    )
    at_limit = requests.put(consul.url + "/v1/txn", data=b" " * (512 * 1024), timeout=10)
    assert at_limit.status_code == 400  # decoded: whitespace is not a JSON array


def test_chunked_body_over_512_kib_is_413_without_its_size(consul: ConsulDouble) -> None:
    """agent/txn_endpoint.go convertOps: without a Content-Length, http.MaxBytesReader stops
    the decode at the limit and the 413 text cannot say how big the body was."""
    ops = json.dumps([{"KV": {"Verb": "set", "Key": "k", "Value": b64("x" * 400_000)}}])
    response = requests.put(consul.url + "/v1/txn", data=iter([ops.encode()]), timeout=10)
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert (response.status_code, response.text) == (
        413,
        f"Request body too large, max size: 524288 bytes. See {DOC}.",
    )


@pytest.mark.parametrize(
    ("ops", "reason"),
    [
        ([{"KV": {"Verb": "set", "Key": "a", "Bogus": 1}}], 'json: unknown field "Bogus"'),
        (
            [{"KV": {"Verb": "set", "Key": "a", "Value": "%%%"}}],
            "illegal base64 data at input byte 0",
        ),
        (
            [{"KV": {"Verb": "set", "Key": "a", "Flags": "1"}}],
            "json: cannot unmarshal string into Go struct field KVTxnOp.KV.Flags of type uint64",
        ),
        ({"KV": {}}, "json: cannot unmarshal object into Go value of type api.TxnOps"),
    ],
    ids=["unknown-field", "base64", "type", "not-a-list"],
)
def test_strict_decode(consul: ConsulDouble, ops: Any, reason: str) -> None:
    # API.md §PUT /v1/txn: decoded strictly; 400 `Failed to parse body: ...`.
    response = txn(consul, ops)
    assert (response.status_code, response.text) == (400, f"Failed to parse body: {reason}")


def test_kv_verbs(consul: ConsulDouble) -> None:
    # API.md §PUT /v1/txn verbs; state/txn.go txnKVS texts.
    assert txn(consul, [{"KV": {"Verb": "set", "Key": "k", "Value": b64("1")}}]).ok
    index = requests.get(consul.url + "/v1/kv/k", timeout=10).json()[0]["ModifyIndex"]
    checks = txn(
        consul,
        [
            {"KV": {"Verb": "check-not-exists", "Key": "k"}},
            {"KV": {"Verb": "check-index", "Key": "k", "Index": index + 1}},
            {"KV": {"Verb": "delete-cas", "Key": "k", "Index": index + 1}},
            {"KV": {"Verb": "get", "Key": "absent"}},
            {"KV": {"Verb": "frobnicate", "Key": "k"}},
        ],
    )
    assert [e["What"] for e in checks.json()["Errors"]] == [
        'key "k" exists',
        f'failed index check for key "k", current modify index {index} != {index + 1}',
        'failed to delete key "k", index is stale',
        'key "absent" doesn\'t exist',
        'unknown KV verb "frobnicate"',
    ]
    ok = txn(
        consul,
        [
            {"KV": {"Verb": "get-or-empty", "Key": "absent"}},
            {"KV": {"Verb": "cas", "Key": "k", "Index": index, "Value": b64("2")}},
            {"KV": {"Verb": "delete-cas", "Key": "gone", "Index": 5}},
        ],
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["Results"][0]["KV"] == {
        "LockIndex": 0,
        "Key": "absent",
        "Flags": 0,
        "Value": None,
        "CreateIndex": 0,
        "ModifyIndex": 0,
    }


def test_kv_lock_and_unlock(consul: ConsulDouble) -> None:
    # API.md §PUT /v1/txn: lock/unlock; state/txn.go lock texts.
    sid = requests.put(consul.url + "/v1/session/create", json={}, timeout=10).json()["ID"]
    locked = txn(consul, [{"KV": {"Verb": "lock", "Key": "l", "Session": sid}}])
    assert locked.json()["Results"][0]["KV"]["Session"] == sid
    other = requests.put(consul.url + "/v1/session/create", json={}, timeout=10).json()["ID"]
    held = txn(
        consul,
        [
            {"KV": {"Verb": "lock", "Key": "l", "Session": other}},
            {"KV": {"Verb": "unlock", "Key": "l", "Session": other}},
        ],
    )
    assert [e["What"] for e in held.json()["Errors"]] == [
        'failed to lock key "l", lock is already held',
        'failed to unlock key "l", lock isn\'t held, or is held by another session',
    ]
    assert txn(consul, [{"KV": {"Verb": "unlock", "Key": "l", "Session": sid}}]).ok


def test_node_and_service_verbs(consul: ConsulDouble) -> None:
    # API.md §PUT /v1/txn: Node/Service get, set, cas, delete (state/txn.go texts).
    assert txn(consul, [node_set(), service_set()]).ok
    got = txn(
        consul,
        [
            {"Node": {"Verb": "get", "Node": {"Node": "capsync-me"}}},
            {"Service": {"Verb": "get", "Node": "capsync-me", "Service": {"ID": "w1"}}},
        ],
    )
    node, service = (next(iter(r.values())) for r in got.json()["Results"])
    assert (node["Node"], service["ID"]) == ("capsync-me", "w1")
    stale = txn(
        consul,
        [
            {
                "Node": {
                    "Verb": "cas",
                    "Node": {"Node": "capsync-me", "Address": "x", "ModifyIndex": 1},
                }
            },
            {
                "Service": {
                    "Verb": "cas",
                    "Node": "capsync-me",
                    "Service": {"ID": "w1", "Service": "worker", "ModifyIndex": 1},
                }
            },
        ],
    )
    assert [e["What"] for e in stale.json()["Errors"]] == [
        'failed to set node "capsync-me", index is stale',
        'failed to set service "w1" on node "capsync-me", index is stale',
    ]
    cas = txn(
        consul,
        [
            {
                "Service": {
                    "Verb": "cas",
                    "Node": "capsync-me",
                    "Service": {
                        "ID": "w1",
                        "Service": "worker",
                        "Port": 9,
                        "ModifyIndex": service["ModifyIndex"],
                    },
                }
            }
        ],
    )
    assert cas.json()["Results"][0]["Service"]["Port"] == 9
    gone = txn(
        consul,
        [
            {
                "Service": {
                    "Verb": "delete",
                    "Node": "capsync-me",
                    "Service": {"ID": "w1", "Service": "worker"},
                }
            },
            {"Node": {"Verb": "delete", "Node": {"Node": "capsync-me"}}},
        ],
    )
    assert gone.json() == {"Results": [], "Errors": None}
    assert requests.get(consul.url + "/v1/catalog/node/capsync-me", timeout=10).json() is None


def test_pre_check_errors_come_alone(consul: ConsulDouble) -> None:
    # agent/consul/txn_endpoint.go preCheck: validation errors are answered before any op runs.
    response = txn(
        consul,
        [
            {"Service": {"Verb": "set", "Node": "n", "Service": {"ID": "x"}}},
            {"Node": {"Verb": "set", "Node": {"Address": "a"}}},
            {"KV": {"Verb": "set", "Key": ""}},
            {"KV": {"Verb": "cas", "Key": "c", "Index": 99}},
        ],
    )
    assert response.json()["Errors"] == [
        {
            "OpIndex": 0,
            "What": "Must provide service name (Service.Service) when service ID is provided",
        },
        {"OpIndex": 1, "What": "Must provide node"},
        {"OpIndex": 2, "What": "Must provide key"},
    ]


def test_read_only_transactions(consul: ConsulDouble) -> None:
    # API.md §PUT /v1/txn: read-only transactions carry no X-Consul-Index (Txn.Read path).
    txn(consul, [{"KV": {"Verb": "set", "Key": "r", "Value": b64("v")}}])
    response = txn(consul, [{"KV": {"Verb": "get", "Key": "r"}}])
    assert response.status_code == 200
    assert "X-Consul-Index" not in response.headers
    assert response.headers["X-Consul-KnownLeader"] == "true"
    assert base64.b64decode(response.json()["Results"][0]["KV"]["Value"]) == b"v"
