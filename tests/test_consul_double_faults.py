"""Fault injection on the Consul double, driven from outside it.

What is injected comes from API.md §Answers that are not data: besides its own errors an agent,
or a proxy in front of it, answers 429 (a rate limit; `Retry-After` may be set), 404 or 502
with an HTML page (a proxy), or slowly. The fault fields are the double's own (faults.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.doubles.consul import ConsulDouble, Fault

CONTROL = "/_double/faults"
HTML = {"Content-Type": "text/html"}
BAD_GATEWAY = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


@pytest.fixture
def consul() -> Iterator[ConsulDouble]:
    with ConsulDouble() as double:
        yield double


def test_429_with_retry_after_on_one_path_and_method_then_the_real_answer(
    consul: ConsulDouble,
) -> None:
    """A rate-limited write (429 with `Retry-After`) on exactly PUT /v1/txn, once; other
    methods and paths are untouched, and the next request gets the real answer."""
    consul.inject(
        Fault(
            path="/v1/txn",
            prefix=False,
            method="PUT",
            status=429,
            body="rate limit exceeded, try again later",
            headers={"Retry-After": "3"},
            times=1,
        )
    )
    assert requests.get(consul.url + "/v1/txn", timeout=10).status_code == 405
    limited = requests.put(consul.url + "/v1/txn", json=[], timeout=10)
    assert (limited.status_code, limited.text) == (429, "rate limit exceeded, try again later")
    assert limited.headers["Retry-After"] == "3"
    assert limited.headers["Content-Type"].startswith("text/plain")
    real = requests.put(consul.url + "/v1/txn", json=[], timeout=10)
    assert (real.status_code, real.json()["Errors"]) == (200, None)


def test_html_404_on_a_path_prefix(consul: ConsulDouble) -> None:
    """A proxy's 404 page on everything under /v1/catalog/, its own Content-Type kept; a
    client that read it as an empty catalogue would delete everything."""
    page = "<html><body><h1>404 Not Found</h1></body></html>"
    consul.inject(Fault(path="/v1/catalog/", status=404, body=page, headers=HTML))
    for path in ("/v1/catalog/services", "/v1/catalog/node-services/n1"):
        response = requests.get(consul.url + path, timeout=10)
        assert (response.status_code, response.text) == (404, page)
        assert response.headers["Content-Type"] == "text/html"
    assert requests.get(consul.url + "/v1/status/leader", timeout=10).status_code == 200
    assert consul.count(path_prefix="/v1/catalog/") == 2  # faulted requests are still seen


def test_control_endpoint_adds_lists_counts_down_and_clears(consul: ConsulDouble) -> None:
    """PUT /_double/faults (a path Consul never serves) adds a fault from outside the
    process; GET shows what is left of it; DELETE clears; none of these are recorded or
    faulted themselves."""
    fault = {"path": "/v1/", "status": 502, "body": BAD_GATEWAY, "headers": HTML, "times": 2}
    added = requests.put(consul.url + CONTROL, json=fault, timeout=10)
    assert added.status_code == 200
    assert [(f["status"], f["times"]) for f in added.json()] == [(502, 2)]
    gateway = requests.get(consul.url + "/v1/kv/a", timeout=10)
    assert (gateway.status_code, gateway.text) == (502, BAD_GATEWAY)
    assert [f["times"] for f in requests.get(consul.url + CONTROL, timeout=10).json()] == [1]
    requests.get(consul.url + "/v1/kv/a", timeout=10)
    assert requests.get(consul.url + CONTROL, timeout=10).json() == []
    assert requests.get(consul.url + "/v1/kv/a", timeout=10).status_code == 404
    requests.put(consul.url + CONTROL, json={"status": 503}, timeout=10)
    assert requests.get(consul.url + "/v1/kv/a", timeout=10).status_code == 503
    assert requests.delete(consul.url + CONTROL, timeout=10).json() == []
    assert requests.get(consul.url + "/v1/kv/a", timeout=10).status_code == 404
    assert all(path != CONTROL for _, path in consul.requests)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('{"status": 1000}', "status: Input should be less than or equal to 599"),
        ('{"status": 42}', "status: Value error, an HTTP status is 100-599"),
        ('{"stauts": 500}', "stauts: Extra inputs are not permitted"),
        ('{"times": -1}', "times: Input should be greater than or equal to 0"),
        ("not json", "body: Invalid JSON"),
    ],
)
def test_control_endpoint_refuses_bad_faults(consul: ConsulDouble, body: str, problem: str) -> None:
    """A bad fault is a 400 naming the field and the rule, and changes nothing."""
    response = requests.put(consul.url + CONTROL, data=body, timeout=10)
    assert response.status_code == 400
    assert response.text.startswith(f"invalid fault: {problem}")
    assert requests.get(consul.url + CONTROL, timeout=10).json() == []


def test_delay_then_the_real_answer(consul: ConsulDouble) -> None:
    """A slow agent: a delay-only fault (status 0) holds the answer past the client's
    time-out, then the API answers as usual."""
    consul.inject(Fault(path="/v1/status/leader", delay=0.5, times=1))
    with pytest.raises(requests.Timeout):
        requests.get(consul.url + "/v1/status/leader", timeout=0.1)
    assert requests.get(consul.url + "/v1/status/leader", timeout=10).json() == "127.0.0.1:8300"


def test_faults_apply_in_order_and_the_first_status_wins(consul: ConsulDouble) -> None:
    """Every matching fault is consumed in the order added; the first with a status answers."""
    consul.inject(Fault(path="/v1/kv/", status=500, body="first", times=1))
    consul.inject(Fault(path="/v1/kv/a", prefix=False, status=502, body="second"))
    assert requests.get(consul.url + "/v1/kv/a", timeout=10).text == "first"
    assert requests.get(consul.url + "/v1/kv/a", timeout=10).text == "second"
    assert requests.get(consul.url + "/v1/kv/b", timeout=10).status_code == 404
