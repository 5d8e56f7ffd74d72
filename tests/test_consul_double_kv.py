"""/v1/kv on the Consul double. Sources: API.md §KV and §Indexes; agent/kvs_endpoint.go,
agent/consul/kvs_endpoint.go and agent/consul/state/kvs.go."""

from __future__ import annotations

import base64
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


def kv(
    double: ConsulDouble, method: str, key: str, data: bytes | None = None, **params: str
) -> requests.Response:
    return requests.request(
        method, f"{double.url}/v1/kv/{key}", data=data, params=params, timeout=10
    )


def session(double: ConsulDouble, **body: Any) -> str:
    response = requests.put(double.url + "/v1/session/create", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return str(response.json()["ID"])


def test_put_and_get(consul: ConsulDouble) -> None:
    # API.md §KV: PUT answers true; GET gives base64 values, Session omitted when unset.
    assert kv(consul, "PUT", "app/config", b"hello", flags="42").json() is True
    [entry] = kv(consul, "GET", "app/config").json()
    assert base64.b64decode(entry["Value"]) == b"hello" and entry["Flags"] == 42
    assert entry["Key"] == "app/config" and "Session" not in entry
    assert entry["LockIndex"] == 0 and entry["CreateIndex"] == entry["ModifyIndex"]
    raw = kv(consul, "GET", "app/config", raw="")
    assert (raw.content, raw.headers["Content-Type"]) == (b"hello", "text/plain")


def test_missing_key_is_404_with_empty_body_and_index(consul: ConsulDouble) -> None:
    # API.md §KV: 404 with an empty body; §Indexes: the KV table index for a missing key.
    kv(consul, "PUT", "other", b"x")
    missing = kv(consul, "GET", "absent")
    assert (missing.status_code, missing.content) == (404, b"")
    assert int(missing.headers["X-Consul-Index"]) > 1


def test_recurse_keys_and_separator(consul: ConsulDouble) -> None:
    # API.md §KV: recurse, keys, separator.
    for key in ("svc/a/x", "svc/a/y", "svc/b", "top"):
        kv(consul, "PUT", key, b"v")
    assert [e["Key"] for e in kv(consul, "GET", "svc/", recurse="").json()] == [
        "svc/a/x",
        "svc/a/y",
        "svc/b",
    ]
    assert kv(consul, "GET", "svc/", keys="").json() == ["svc/a/x", "svc/a/y", "svc/b"]
    assert kv(consul, "GET", "svc/", keys="", separator="/").json() == ["svc/a/", "svc/b"]
    assert kv(consul, "GET", "nothing/", keys="").status_code == 404
    assert kv(consul, "GET", "nothing/", recurse="").status_code == 404


def test_cas(consul: ConsulDouble) -> None:
    # API.md §KV: `?cas=0` creates only; otherwise the ModifyIndex must match.
    assert kv(consul, "PUT", "k", b"1", cas="0").json() is True
    assert kv(consul, "PUT", "k", b"2", cas="0").json() is False
    index = kv(consul, "GET", "k").json()[0]["ModifyIndex"]
    assert kv(consul, "PUT", "k", b"3", cas=str(index + 100)).json() is False
    assert kv(consul, "PUT", "k", b"3", cas=str(index)).json() is True
    stale = kv(consul, "DELETE", "k", cas=str(index))
    assert stale.json() is False
    fresh = kv(consul, "GET", "k").json()[0]["ModifyIndex"]
    assert kv(consul, "DELETE", "k", cas=str(fresh)).json() is True


def test_conflicting_flags(consul: ConsulDouble) -> None:
    # API.md §KV: two of cas/acquire/release at once is 400 `Conflicting flags` (conflictingFlags).
    response = kv(consul, "PUT", "k", b"v", cas="0", acquire="s")
    assert response.status_code == 400
    assert response.text == "Conflicting flags: acquire=s&cas=0\n"


def test_delete_and_recurse(consul: ConsulDouble) -> None:
    # API.md §KV: DELETE answers true, recurse removes the subtree.
    for key in ("t/a", "t/b", "u"):
        kv(consul, "PUT", key, b"v")
    assert kv(consul, "DELETE", "t/", recurse="").json() is True
    assert kv(consul, "GET", "t/", recurse="").status_code == 404
    assert kv(consul, "DELETE", "u").json() is True
    assert kv(consul, "DELETE", "never").json() is True


def test_acquire_and_release(consul: ConsulDouble) -> None:
    # API.md §KV: acquire sets Session and LockIndex+1; held -> false; release by non-holder false.
    mine, theirs = session(consul), session(consul)
    assert kv(consul, "PUT", "lock", b"me", acquire=mine).json() is True
    [entry] = kv(consul, "GET", "lock").json()
    assert (entry["Session"], entry["LockIndex"]) == (mine, 1)
    assert kv(consul, "PUT", "lock", b"them", acquire=theirs).json() is False
    assert kv(consul, "PUT", "lock", b"them", release=theirs).json() is False
    assert kv(consul, "PUT", "lock", b"done", release=mine).json() is True
    [entry] = kv(consul, "GET", "lock").json()
    assert "Session" not in entry and entry["LockIndex"] == 1
    assert kv(consul, "PUT", "lock", b"them", acquire=theirs).json() is True
    assert kv(consul, "GET", "lock").json()[0]["LockIndex"] == 2


def test_acquire_with_unknown_session(consul: ConsulDouble) -> None:
    # API.md §KV: 500 `invalid session "<id>"`, which KVS.Apply wraps as `raft apply failed: `.
    response = kv(consul, "PUT", "lock", b"x", acquire="nope")
    assert response.status_code == 500
    assert response.text == 'raft apply failed: invalid session "nope"'


def test_lock_delay_after_invalidation(consul: ConsulDouble) -> None:
    # API.md §Sessions: invalidation releases locks and starts lock-delay; §KV: acquire during
    # lock-delay answers false.
    holder, other = session(consul), session(consul, LockDelay="10s")
    assert kv(consul, "PUT", "lock", b"x", acquire=holder).json() is True
    requests.put(f"{consul.url}/v1/session/destroy/{holder}", timeout=10)
    [entry] = kv(consul, "GET", "lock").json()
    assert "Session" not in entry
    assert kv(consul, "PUT", "lock", b"y", acquire=other).json() is False
    consul.store.lock_delays.clear()
    assert kv(consul, "PUT", "lock", b"y", acquire=other).json() is True


def test_blocking_kv_read_wakes_on_write(consul: ConsulDouble) -> None:
    # API.md §Indexes: a KV key's ModifyIndex; blocked readers wake on the write.
    kv(consul, "PUT", "watched", b"1")
    index = kv(consul, "GET", "watched").headers["X-Consul-Index"]
    threading.Timer(0.15, kv, args=(consul, "PUT", "watched", b"2")).start()
    started = time.monotonic()
    response = kv(consul, "GET", "watched", index=index, wait="5s")
    assert time.monotonic() - started < 3
    assert base64.b64decode(response.json()[0]["Value"]) == b"2"


def test_large_value_is_413(consul: ConsulDouble) -> None:
    # agent/kvs_endpoint.go: bodies over kv_max_value_size (512 KiB) are refused.
    response = kv(consul, "PUT", "big", b"x" * (512 * 1024 + 1))
    assert response.status_code == 413
    assert response.text.startswith("Request body(524289 bytes) too large, max size: 524288 bytes.")
