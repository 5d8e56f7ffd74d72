"""The Consul double's catalog endpoints and blocking queries, driven over real HTTP.

Every test cites where the behaviour comes from: a section of
/work/shared/design/CONSUL-API.md ("API.md §...") or the Consul source file it mirrors.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.doubles.consul import ConsulDouble


@pytest.fixture
def consul() -> Iterator[ConsulDouble]:
    with ConsulDouble() as double:
        yield double


def put(double: ConsulDouble, path: str, body: Any = None, **params: str) -> requests.Response:
    return requests.put(double.url + path, json=body, params=params, timeout=10)


def get(double: ConsulDouble, path: str, **params: str) -> requests.Response:
    return requests.get(double.url + path, params=params, timeout=10)


def register(double: ConsulDouble, node: str = "n1", **service: object) -> None:
    body: dict[str, object] = {"Node": node, "Address": "10.0.0.1"}
    if service:
        body["Service"] = service
    response = put(double, "/v1/catalog/register", body)
    assert response.status_code == 200, response.text


def test_register_creates_node_and_applies_defaults(consul: ConsulDouble) -> None:
    # API.md §PUT /v1/catalog/register: node created, ID defaults to the name, Weights {1, 1};
    # §Reads: ServiceTags never null, ServiceMeta always an object; body `true`.
    response = put(
        consul,
        "/v1/catalog/register",
        {"Node": "n1", "Address": "10.0.0.1", "Service": {"Service": "web", "Port": 80}},
    )
    assert (response.status_code, response.json()) == (200, True)
    [entry] = get(consul, "/v1/catalog/service/web").json()
    assert entry["Node"] == "n1" and entry["Address"] == "10.0.0.1"
    assert entry["ServiceID"] == "web" and entry["ServicePort"] == 80
    assert entry["ServiceWeights"] == {"Passing": 1, "Warning": 1}
    assert entry["ServiceTags"] == [] and entry["ServiceMeta"] == {}
    assert entry["CreateIndex"] == entry["ModifyIndex"] > 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"Node": "n1", "Address": "a", "WriteRequest": {"Token": ""}}, "WriteRequest"),
        ({"Node": "n1", "Address": "a", "Service": {"Name": "web"}}, "Name"),
    ],
    ids=["top-level", "service-field"],
)
def test_register_rejects_unknown_fields(consul: ConsulDouble, body: object, field: str) -> None:
    # API.md §PUT /v1/catalog/register: strict decode since 1.7 (lib.DecodeJSON).
    response = put(consul, "/v1/catalog/register", body)
    assert response.status_code == 400
    assert response.text == f'Request decode failed: json: unknown field "{field}"'


def test_register_keys_match_case_insensitively(consul: ConsulDouble) -> None:
    # API.md §PUT /v1/catalog/register: python-consul2's lowercase keys bind (Go encoding/json).
    body = {"node": "n1", "address": "10.0.0.9", "service": {"service": "web", "tags": ["x"]}}
    assert put(consul, "/v1/catalog/register", body).status_code == 200
    [entry] = get(consul, "/v1/catalog/service/web").json()
    assert (entry["Address"], entry["ServiceTags"]) == ("10.0.0.9", ["x"])


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"Address": "a"}, "Must provide node"),
        ({"Node": "n1"}, "Must provide address if SkipNodeUpdate is not set"),
        (
            {"Node": "n1", "Address": "a", "Service": {"ID": "x"}},
            "Must provide service name (Service.Service) when service ID is provided",
        ),
        (
            {"Node": "n1", "Address": "a", "Service": {"Service": "w", "Address": "0.0.0.0"}},
            "Invalid service address",
        ),
        ({"Node": "n1", "Address": "a", "ID": "nope"}, "Bad node ID: uuid string is wrong length"),
    ],
    ids=["node", "address", "service-name", "any-address", "node-id"],
)
def test_register_validation_is_500_plain_text(
    consul: ConsulDouble, body: object, text: str
) -> None:
    # API.md §PUT /v1/catalog/register validation; agent/consul/catalog_endpoint.go nodePreApply.
    response = put(consul, "/v1/catalog/register", body)
    assert (response.status_code, response.text) == (500, text)
    assert response.headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize(
    ("meta", "reason"),
    [
        (
            {"bad key": "v"},
            "Couldn't load metadata pair ('bad key', 'v'): Key contains invalid characters",
        ),
        ({"": "v"}, "Couldn't load metadata pair ('', 'v'): Key cannot be blank"),
        (
            {"k" * 129: "v"},
            f"Couldn't load metadata pair ('{'k' * 129}', 'v'): "
            "Key is too long (limit: 128 characters)",
        ),
        (
            {"k": "v" * 513},
            f"Couldn't load metadata pair ('k', '{'v' * 513}'): "
            "Value is too long (limit: 512 characters)",
        ),
        (
            {"consul-x": "v"},
            "Couldn't load metadata pair ('consul-x', 'v'): "
            "Key prefix 'consul-' is reserved for internal use",
        ),
        (
            {f"k{i}": "v" for i in range(65)},
            "Node metadata cannot contain more than 64 key/value pairs",
        ),
    ],
    ids=["chars", "blank", "long-key", "long-value", "reserved", "too-many"],
)
def test_register_service_meta_validation(
    consul: ConsulDouble, meta: dict[str, str], reason: str
) -> None:
    # API.md §PUT /v1/catalog/register service meta; agent/structs/structs.go validateMetadata.
    body = {"Node": "n1", "Address": "a", "Service": {"Service": "web", "Meta": meta}}
    response = put(consul, "/v1/catalog/register", body)
    assert response.status_code == 500
    assert response.text == (
        f"failed inserting service: Invalid Service Meta for node n1 and serviceID web: {reason}"
    )


def test_identical_reregistration_moves_no_index(consul: ConsulDouble) -> None:
    # API.md §PUT /v1/catalog/register: identical data writes nothing (ModifyIndex, X-Consul-Index).
    register(consul, Service="web", Tags=["a"])
    first = get(consul, "/v1/catalog/service/web")
    register(consul, Service="web", Tags=["a"])
    again = get(consul, "/v1/catalog/service/web")
    assert again.headers["X-Consul-Index"] == first.headers["X-Consul-Index"]
    assert again.json()[0]["ModifyIndex"] == first.json()[0]["ModifyIndex"]
    register(consul, Service="web", Tags=["b"])
    changed = get(consul, "/v1/catalog/service/web")
    assert int(changed.headers["X-Consul-Index"]) > int(first.headers["X-Consul-Index"])
    assert changed.json()[0]["CreateIndex"] == first.json()[0]["CreateIndex"]


def test_skip_node_update_still_creates_missing_node(consul: ConsulDouble) -> None:
    # API.md §PUT /v1/catalog/register: a missing node is created, also with SkipNodeUpdate.
    body = {
        "Node": "ext",
        "SkipNodeUpdate": True,
        "NodeMeta": {"external-node": "true"},
        "Service": {"Service": "web"},
    }
    assert put(consul, "/v1/catalog/register", body).status_code == 200
    node = get(consul, "/v1/catalog/node-services/ext").json()["Node"]
    assert node["Meta"] == {"external-node": "true"}


def test_deregister(consul: ConsulDouble) -> None:
    # API.md §PUT /v1/catalog/deregister: ServiceID, whole node, missing targets answer true.
    register(consul, Service="web")
    register(consul, Service="api")
    assert put(consul, "/v1/catalog/deregister", {"Node": "n1", "ServiceID": "web"}).json() is True
    assert get(consul, "/v1/catalog/service/web").json() == []
    assert put(consul, "/v1/catalog/deregister", {"Node": "n1", "ServiceID": "gone"}).json() is True
    assert put(consul, "/v1/catalog/deregister", {"Node": "ghost"}).json() is True
    assert put(consul, "/v1/catalog/deregister", {"Node": "n1", "Address": "x"}).json() is True
    assert get(consul, "/v1/catalog/node/n1").json() is None
    missing = put(consul, "/v1/catalog/deregister", {"ServiceID": "web"})
    assert (missing.status_code, missing.text) == (500, "Must provide node")


def test_reads_of_missing_things(consul: ConsulDouble) -> None:
    # API.md §Reads: missing service `[]`; node-services {"Node": null, "Services": null};
    # /v1/catalog/node/:node `null`.
    assert get(consul, "/v1/catalog/service/nothing").json() == []
    assert get(consul, "/v1/catalog/node-services/ghost").json() == {"Node": None, "Services": None}
    assert get(consul, "/v1/catalog/node/ghost").json() is None


def test_node_endpoints_shapes(consul: ConsulDouble) -> None:
    # API.md §Reads: node-services lists services; the older node endpoint maps them by ID.
    register(consul, Service="web", ID="web-1", Tags=["t"])
    listed = get(consul, "/v1/catalog/node-services/N1").json()
    assert listed["Node"]["Node"] == "n1"
    assert [s["ID"] for s in listed["Services"]] == ["web-1"]
    mapped = get(consul, "/v1/catalog/node/n1").json()
    assert mapped["Services"]["web-1"]["Service"] == "web"
    assert mapped["Services"]["web-1"]["Tags"] == ["t"]


def test_service_reads_tag_and_node_meta(consul: ConsulDouble) -> None:
    # API.md §Reads: tag= repeatable, all must match, case-insensitive; node-meta=k:v.
    put(
        consul,
        "/v1/catalog/register",
        {
            "Node": "a",
            "Address": "1",
            "NodeMeta": {"rack": "r1"},
            "Service": {"Service": "web", "Tags": ["Blue", "x"]},
        },
    )
    put(
        consul,
        "/v1/catalog/register",
        {
            "Node": "b",
            "Address": "2",
            "NodeMeta": {"rack": "r2"},
            "Service": {"Service": "web", "Tags": ["blue"]},
        },
    )
    by_tags = requests.get(
        consul.url + "/v1/catalog/service/web", params=[("tag", "BLUE"), ("tag", "x")], timeout=10
    ).json()
    assert [e["Node"] for e in by_tags] == ["a"]
    by_meta = get(consul, "/v1/catalog/service/web", **{"node-meta": "rack:r2"}).json()
    assert [e["Node"] for e in by_meta] == ["b"]
    assert [e["Node"] for e in get(consul, "/v1/catalog/service/WEB").json()] == ["a", "b"]


def test_listings(consul: ConsulDouble) -> None:
    # API.md §Reads: /v1/catalog/services {name: [tags]} de-duplicated; /v1/catalog/nodes fields.
    register(consul, "a", Service="web", ID="w1", Tags=["x", "y"])
    register(consul, "b", Service="web", ID="w2", Tags=["y"])
    services = get(consul, "/v1/catalog/services").json()
    assert sorted(services["web"]) == ["x", "y"] and services["consul"] == []
    nodes = get(consul, "/v1/catalog/nodes").json()
    assert [n["Node"] for n in nodes] == ["a", "b", "consul-double"]
    assert set(nodes[0]) == {
        "ID",
        "Node",
        "Address",
        "Datacenter",
        "TaggedAddresses",
        "Meta",
        "CreateIndex",
        "ModifyIndex",
    }


def test_query_meta_headers(consul: ConsulDouble) -> None:
    # API.md §Indexes: X-Consul-Index never 0, plus KnownLeader and LastContact.
    response = get(consul, "/v1/kv/never-written")
    assert response.headers["X-Consul-Index"] == "1"
    assert response.headers["X-Consul-KnownLeader"] == "true"
    assert response.headers["X-Consul-LastContact"] == "0"


def test_blocking_query_wakes_on_change(consul: ConsulDouble) -> None:
    # API.md §Indexes: block until the index is strictly greater than ?index.
    register(consul, Service="web")
    index = get(consul, "/v1/catalog/service/web").headers["X-Consul-Index"]
    timer = threading.Timer(0.2, register, args=(consul,), kwargs={"Service": "web", "Port": 81})
    timer.start()
    started = time.monotonic()
    response = get(consul, "/v1/catalog/service/web", index=index, wait="5s")
    timer.join()
    assert 0.1 < time.monotonic() - started < 3
    assert int(response.headers["X-Consul-Index"]) > int(index)
    assert response.json()[0]["ServicePort"] == 81


def test_blocking_query_times_out_and_ignores_identical_writes(consul: ConsulDouble) -> None:
    # API.md §Indexes: the wait ends with the same index; §register: identical writes move none.
    register(consul, Service="web")
    index = get(consul, "/v1/catalog/service/web").headers["X-Consul-Index"]
    threading.Timer(0.05, register, args=(consul,), kwargs={"Service": "web"}).start()
    started = time.monotonic()
    response = get(consul, "/v1/catalog/service/web", index=index, wait="300ms")
    assert 0.29 < time.monotonic() - started < 1.5
    assert response.headers["X-Consul-Index"] == index


@pytest.mark.parametrize(
    ("params", "text"),
    [
        ({"index": "abc"}, "Invalid index"),
        ({"index": "-1"}, "Invalid index"),
        ({"wait": "5"}, "Invalid wait time"),
        ({"wait": "soon"}, "Invalid wait time"),
    ],
)
def test_bad_blocking_parameters(consul: ConsulDouble, params: dict[str, str], text: str) -> None:
    # API.md §Indexes: bad values are 400 `Invalid index` / `Invalid wait time` (agent/http.go).
    response = get(consul, "/v1/catalog/services", **params)
    assert (response.status_code, response.text) == (400, text)


def test_existing_node_without_services(consul: ConsulDouble) -> None:
    """agent/consul/state/catalog.go NodeServiceList appends to a nil slice, so a node with no
    services lists `"Services": null`; NodeServices makes a map, so /v1/catalog/node gives
    `{}` (agent/catalog_endpoint.go CatalogNodeServiceList / CatalogNodeServices)."""
    register(consul)
    listed = get(consul, "/v1/catalog/node-services/n1").json()
    assert (listed["Node"]["Node"], listed["Services"]) == ("n1", None)
    mapped = get(consul, "/v1/catalog/node/n1").json()
    assert (mapped["Node"]["Node"], mapped["Services"]) == ("n1", {})


NODE_ID = "4f6a5b0e-1c2d-4e3f-8a9b-0c1d2e3f4a5b"


@pytest.mark.parametrize(
    ("key", "found"),
    [
        (NODE_ID, True),
        ("4f6a", True),
        ("4F6A5B0E-1C2D-4E", True),  # hex digits in either case, dashes ignored
        ("4f6a5", True),  # odd length: the last character is dropped (resizeNodeLookupKey)
        (NODE_ID + "0", True),  # 37 characters, dropped to 36
        ("4f6a5b0e-1c", False),  # dropped to 4f6a5b0e-1: nine hex digits do not pair up
        (NODE_ID + "00", False),  # longer than a UUID
        ("4f", False),  # shared with the second node: ambiguous, so no node
        ("4", False),  # shorter than minUUIDLookupLen
        ("zz", False),  # not hex
    ],
)
def test_node_endpoints_resolve_a_node_id_prefix(
    consul: ConsulDouble, key: str, found: bool
) -> None:
    """agent/consul/state/catalog.go nodeServices (behind both NodeServices and
    NodeServiceList): the node by name, else by the nodes table's uuid prefix index when the
    key has at least minUUIDLookupLen (2) characters; one match only."""
    put(
        consul,
        "/v1/catalog/register",
        {"Node": "n1", "ID": NODE_ID, "Address": "10.0.0.1", "Service": {"Service": "web"}},
    )
    other = "4f00aaaa-0000-4000-8000-000000000000"
    put(consul, "/v1/catalog/register", {"Node": "n2", "ID": other, "Address": "10.0.0.2"})
    listed = get(consul, f"/v1/catalog/node-services/{key}").json()
    mapped = get(consul, f"/v1/catalog/node/{key}").json()
    if found:
        assert listed["Node"]["Node"] == "n1"
        assert [s["ID"] for s in listed["Services"]] == ["web"]
        assert mapped["Node"]["Node"] == "n1"
    else:
        assert listed == {"Node": None, "Services": None}
        assert mapped is None


def test_catalog_services_index_moves_only_with_services(consul: ConsulDouble) -> None:
    """agent/consul/state/catalog.go Services: the index is the services table's
    (catalogServicesMaxIndex); only ServicesByNodeMeta, behind ?node-meta=, also takes the
    nodes table's."""

    def index(**params: str) -> int:
        return int(get(consul, "/v1/catalog/services", **params).headers["X-Consul-Index"])

    register(consul, Service="web")
    before, before_meta = index(), index(**{"node-meta": "rack:r1"})
    put(consul, "/v1/catalog/register", {"Node": "n2", "Address": "10.0.0.2"})
    put(consul, "/v1/catalog/register", {"Node": "n1", "Address": "10.0.0.9"})
    assert index() == before
    assert index(**{"node-meta": "rack:r1"}) > before_meta
    register(consul, "n2", Service="api")
    assert index() > before
