"""`?filter=` on the Consul double: the go-bexpr subset capsync relies on.

Sources: API.md §Filter expressions; go-bexpr v0.1.x grammar.peg, validate.go and
field_config.go (the version Consul pins; its three-argument CreateFilter is what
agent/consul/catalog_endpoint.go calls).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.doubles.consul import ConsulDouble

PREFIX = "Failed to create boolean expression evaluator: "


@pytest.fixture(scope="module")
def consul() -> Iterator[ConsulDouble]:
    with ConsulDouble() as double:
        for node, rack, service in [
            (
                "a",
                "r1",
                {
                    "ID": "w1",
                    "Service": "web",
                    "Tags": ["clippy", "rustfmt"],
                    "Port": 80,
                    "Address": "10.1.0.1",
                    "Meta": {"capsync-owner": "me", "static_analysis": "clippy!", "env": "prod"},
                },
            ),
            (
                "b",
                "r2",
                {
                    "ID": "w2",
                    "Service": "web",
                    "Tags": [],
                    "Port": 81,
                    "Meta": {"capsync-owner": "other", "env": "dev"},
                },
            ),
        ]:
            body: dict[str, Any] = {
                "Node": node,
                "Address": f"10.0.0.{ord(node)}",
                "NodeMeta": {"rack": rack},
                "Service": service,
            }
            assert requests.put(double.url + "/v1/catalog/register", json=body, timeout=10).ok
        yield double


def matching(
    double: ConsulDouble, expression: str, path: str = "/v1/catalog/service/web"
) -> list[str]:
    response = requests.get(double.url + path, params={"filter": expression}, timeout=10)
    assert response.status_code == 200, response.text
    return [entry["ServiceID"] for entry in response.json()]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('"clippy" in ServiceTags', ["w1"]),
        ('"clippy" not in ServiceTags', ["w2"]),
        ('ServiceTags contains "rustfmt"', ["w1"]),
        ('ServiceTags not contains "rustfmt"', ["w2"]),
        ("ServiceTags is empty", ["w2"]),
        ("ServiceTags is not empty", ["w1"]),
        ('ServiceMeta.env == "prod"', ["w1"]),
        ('ServiceMeta["capsync-owner"] == "me"', ["w1"]),
        ("ServiceMeta[`capsync-owner`] != `me`", ["w2"]),
        ('ServiceMeta.static_analysis matches "^clippy"', ["w1"]),
        ('ServiceMeta.env not matches "^p"', ["w2"]),
        ('ServiceMeta.missing == "x"', []),
        ('ServiceMeta.missing != "x"', ["w1", "w2"]),
        ('"env" in ServiceMeta', ["w1", "w2"]),
        ("ServiceMeta.env == dev", ["w2"]),
        ('ServiceName == "web" and ServicePort == 81', ["w2"]),
        ('ServicePort == 80 or Node == "b"', ["w1", "w2"]),
        ('not (ServiceID == "w1")', ["w2"]),
        ('(Node == "a" or Node == "b") and not "clippy" in ServiceTags', ["w2"]),
        ('Address == "10.0.0.98"', ["w2"]),
        ('ServiceAddress == "10.1.0.1"', ["w1"]),
        ('Datacenter == "dc1"', ["w1", "w2"]),
        ('NodeMeta.rack == "r1"', ["w1"]),
        ("ServiceWeights.Passing == 1", ["w1", "w2"]),
        ('ServiceName == "WEB"', []),
        ('"CLIPPY" in ServiceTags', []),
        ('"eb" in ServiceName', ["w1", "w2"]),
    ],
)
def test_filter_semantics(consul: ConsulDouble, expression: str, expected: list[str]) -> None:
    # API.md §Filter expressions: operators, selectors, quoting; comparisons are case-sensitive;
    # a missing map key takes the operator's NotPresentDisposition (go-bexpr ast.go).
    assert matching(consul, expression) == expected


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ('Bogus == "x"', 'Selector "Bogus" is not valid'),
        ("ServiceWeights.Heavy == 1", 'Selector "ServiceWeights.Heavy" is not valid'),
        ('ServiceTags == "x"', 'Invalid match operator "Equal" for selector "ServiceTags"'),
        (
            'ServicePort == "eighty"',
            'Failed to coerce value "eighty" for selector "ServicePort": '
            'strconv.ParseInt: parsing "eighty": invalid syntax',
        ),
        ('(ServiceName == "web"', "1:22 (21): rule grouping: Unmatched parentheses"),
        ('ServiceName == "web', "1:20 (19): rule string: Unterminated string literal"),
        (
            'ServiceMeta.odd-key == "x"',
            '1:16 (15): no match found, expected: "!=", ".", "==", '
            '"[", [ \\t\\r\\n] or [a-zA-Z0-9_]',
        ),
        ('ServiceName == "a\\"b"', "1:16 (15): rule string: invalid syntax"),
    ],
    ids=[
        "selector",
        "nested-selector",
        "operator",
        "coerce",
        "paren",
        "unterminated",
        "dash-needs-index",
        "no-quote-escape",
    ],
)
def test_bad_expressions_are_500(consul: ConsulDouble, expression: str, reason: str) -> None:
    # API.md §Filter expressions: a bad expression is 500 `Failed to create boolean expression
    # evaluator: ...`. go-bexpr's DoubleStringChar is `!'"' .`, so `\"` ends the string: use
    # backticks for values holding quotes.
    response = requests.get(
        consul.url + "/v1/catalog/service/web", params={"filter": expression}, timeout=10
    )
    assert (response.status_code, response.text) == (500, PREFIX + reason)


def test_filter_on_other_endpoints(consul: ConsulDouble) -> None:
    # agent/consul/catalog_endpoint.go: ListNodes filters structs.Node, NodeServiceList
    # structs.NodeService, ListServices structs.ServiceNode.
    nodes = requests.get(
        consul.url + "/v1/catalog/nodes", params={"filter": 'Meta.rack == "r2"'}, timeout=10
    ).json()
    assert [n["Node"] for n in nodes] == ["b"]
    listed = requests.get(
        consul.url + "/v1/catalog/node-services/a",
        params={"filter": '"clippy" in Tags'},
        timeout=10,
    ).json()
    assert [s["ID"] for s in listed["Services"]] == ["w1"]
    services = requests.get(
        consul.url + "/v1/catalog/services",
        params={"filter": 'ServiceMeta.env == "dev"'},
        timeout=10,
    ).json()
    assert services == {"web": []}
