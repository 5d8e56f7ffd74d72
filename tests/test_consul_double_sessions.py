"""/v1/session on the Consul double. Sources: API.md §Sessions; agent/session_endpoint.go,
agent/consul/session_endpoint.go, session_ttl.go and agent/consul/state/session.go.

TTLs below 10s are refused, so expiry is driven with an injected clock on `double.store`
instead of sleeping.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.doubles.consul import ConsulDouble


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def consul() -> Iterator[ConsulDouble]:
    with ConsulDouble() as double:
        yield double


def create(double: ConsulDouble, **body: Any) -> requests.Response:
    return requests.put(double.url + "/v1/session/create", json=body, timeout=10)


def info(double: ConsulDouble, session_id: str) -> list[dict[str, object]]:
    response = requests.get(f"{double.url}/v1/session/info/{session_id}", timeout=10)
    return list(response.json())


def test_create_defaults(consul: ConsulDouble) -> None:
    # API.md §Sessions: Node defaults to the agent's node, LockDelay 15s, release,
    # NodeChecks ["serfHealth"] (which the agent's own node has).
    session_id = requests.put(consul.url + "/v1/session/create", timeout=10).json()["ID"]
    [session] = info(consul, session_id)
    assert session["Node"] == "consul-double" and session["Behavior"] == "release"
    assert session["LockDelay"] == 15_000_000_000 and session["TTL"] == ""
    assert session["NodeChecks"] == ["serfHealth"]


@pytest.mark.parametrize(
    ("ttl", "text"),
    [
        ("5s", "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]"),
        ("25h", "Invalid Session TTL '90000000000000', must be between [10s=24h0m0s]"),
        ("soon", "Session TTL 'soon' invalid: time: invalid duration \"soon\""),
    ],
)
def test_ttl_bounds(consul: ConsulDouble, ttl: str, text: str) -> None:
    # API.md §Sessions: TTL between 10s and 24h, else 500 `Invalid Session TTL ...`.
    response = create(consul, TTL=ttl)
    assert (response.status_code, response.text) == (500, text)
    assert create(consul, TTL="10s").status_code == 200


def test_catalog_only_node_needs_empty_node_checks(consul: ConsulDouble) -> None:
    # API.md §Sessions: the default serfHealth check is missing on a catalog-only node;
    # Session.Apply wraps the state store's text as `apply failed: ...`.
    node = {"Node": "capsync-me", "Address": "127.0.0.1"}
    requests.put(consul.url + "/v1/catalog/register", json=node, timeout=10)
    refused = create(consul, Node="capsync-me")
    assert (refused.status_code, refused.text) == (
        500,
        "apply failed: Missing check 'serfHealth' registration",
    )
    assert create(consul, Node="capsync-me", NodeChecks=[]).status_code == 200
    missing = create(consul, Node="ghost", NodeChecks=[])
    assert missing.text == "apply failed: Missing node registration"


def test_behavior_and_unknown_fields(consul: ConsulDouble) -> None:
    # API.md §Sessions: body fields unknown to Consul are ignored; Behavior release|delete.
    assert create(consul, Behavior="delete", Whatever=1).status_code == 200
    bad = create(consul, Behavior="explode")
    assert (bad.status_code, bad.text) == (500, "Invalid Behavior setting 'explode'")


def test_renew_destroy_info(consul: ConsulDouble) -> None:
    # API.md §Sessions: renew answers a one-element list or 404; destroy is always true.
    session_id = create(consul, TTL="30s").json()["ID"]
    renewed = requests.put(f"{consul.url}/v1/session/renew/{session_id}", timeout=10)
    assert [s["ID"] for s in renewed.json()] == [session_id]
    assert requests.put(f"{consul.url}/v1/session/destroy/{session_id}", timeout=10).json() is True
    assert requests.put(f"{consul.url}/v1/session/destroy/{session_id}", timeout=10).json() is True
    assert info(consul, session_id) == []
    gone = requests.put(f"{consul.url}/v1/session/renew/{session_id}", timeout=10)
    assert (gone.status_code, gone.text) == (404, f"Session id '{session_id}' not found")


def test_expiry_is_twice_the_ttl_after_the_last_renew(consul: ConsulDouble) -> None:
    # API.md §Sessions: the server timer is 2 x TTL, reset by each renew (session_ttl.go).
    clock = FakeClock()
    consul.store.clock = clock
    session_id = create(consul, TTL="10s").json()["ID"]
    clock.now += 15
    requests.put(f"{consul.url}/v1/session/renew/{session_id}", timeout=10)
    clock.now += 19.9
    assert consul.store.reap_expired() == []
    clock.now += 0.2
    assert consul.store.reap_expired() == [session_id]
    assert info(consul, session_id) == []


def test_invalidation_releases_or_deletes_locks(consul: ConsulDouble) -> None:
    # API.md §Sessions: invalidation releases or deletes the session's locks per Behavior.
    release = create(consul).json()["ID"]
    delete = create(consul, Behavior="delete").json()["ID"]
    for key, sid in (("r", release), ("d", delete)):
        assert (
            requests.put(
                f"{consul.url}/v1/kv/{key}", data=b"v", params={"acquire": sid}, timeout=10
            ).json()
            is True
        )
    consul.expire_session(release)
    consul.expire_session(delete)
    [entry] = requests.get(consul.url + "/v1/kv/r", timeout=10).json()
    assert "Session" not in entry and base64.b64decode(entry["Value"]) == b"v"
    assert requests.get(consul.url + "/v1/kv/d", timeout=10).status_code == 404


def test_expiry_happens_without_callers_and_wakes_blocked_readers(consul: ConsulDouble) -> None:
    # API.md §Sessions: expiry must happen on its own; §Indexes: blocked KV readers wake.
    clock = FakeClock()
    consul.store.clock = clock
    session_id = create(consul, TTL="10s").json()["ID"]
    requests.put(
        consul.url + "/v1/kv/leader", data=b"me", params={"acquire": session_id}, timeout=10
    )
    index = requests.get(consul.url + "/v1/kv/leader", timeout=10).headers["X-Consul-Index"]
    clock.now += 21
    started = time.monotonic()
    woken = requests.get(
        consul.url + "/v1/kv/leader", params={"index": index, "wait": "5s"}, timeout=10
    )
    assert time.monotonic() - started < 3
    assert "Session" not in woken.json()[0]
    assert info(consul, session_id) == []


def test_critical_check_invalidates_sessions(consul: ConsulDouble) -> None:
    # agent/consul/state/catalog.go ensureCheckTxn: a check turning critical ends its sessions.
    session_id = create(consul).json()["ID"]
    body: dict[str, Any] = {
        "Node": "consul-double",
        "Address": "127.0.0.1",
        "SkipNodeUpdate": True,
        "Check": {"CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "critical"},
    }
    assert requests.put(consul.url + "/v1/catalog/register", json=body, timeout=10).ok
    assert info(consul, session_id) == []
    refused = create(consul)
    assert refused.text == "apply failed: Check 'serfHealth' is in critical state"
