"""Consul transactions split by bytes and ops, with issue 18's KV documents counted in:
one entry's ops (its service and its document) always travel in one transaction, and an
entry too big for any transaction is refused alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from daemon.plan import Changes
from daemon.registry.consul import ConsulRegistry
from daemon.registry.ownership import Ownership
from discovery import codec, full_entry, schema
from discovery.consul.client import ConsulClient, ConsulEndpoint, Response
from tests.doubles.consul import ConsulDouble

NOW = 1_767_225_600


class SpyClient(ConsulClient):
    def __init__(self, endpoint: ConsulEndpoint) -> None:
        super().__init__(endpoint)
        self.txns: list[list[dict[str, Any]]] = []

    def put(self, path: str, body: Any = None, params: dict[str, str] | None = None) -> Response:
        if path == "/v1/txn":
            self.txns.append(body)
        return super().put(path, body, params)


def full(worker_id: str, signature: str = "s") -> codec.Entry:
    tool = {
        "tool_name": "clippy",
        "expiration": {"expires_at": NOW + 3600},
        "attestation": {
            "capability_hash": "0" * 64,
            "signature": signature,
            "public_key": "k",
            "timestamp": NOW - 60,
            "algorithm": "SHA256-RSA",
            "attester": "ci",
        },
        "verified": True,
    }
    caps = schema.validate({"id": worker_id, "static_analysis_tools": [tool]}, ref="t")
    return full_entry.encode(
        caps,
        codec.Provenance(service="worker", owner="host-1", source="file", ref=f"/{worker_id}"),
        now=NOW,
    )


@pytest.fixture
def registry() -> Iterator[tuple[ConsulRegistry, SpyClient]]:
    with ConsulDouble() as double:
        client = SpyClient(ConsulEndpoint(double.address))
        yield (
            ConsulRegistry(
                client,
                Ownership(service="worker", owner="host-1", node="capsync-host-1"),
                max_bytes=8192,
            ),
            client,
        )
        client.close()


def test_an_entry_and_its_document_are_never_split(
    registry: tuple[ConsulRegistry, SpyClient],
) -> None:
    consul, spy = registry
    entries = [full(f"w-{i:02}") for i in range(30)]
    assert all(codec.DOCUMENT in e.meta for e in entries)
    consul.snapshot()
    result = consul.apply(Changes(create=tuple(entries)))
    assert result.written == {"create": 30} and result.complete
    assert len(spy.txns) > 1  # split by bytes
    for body in spy.txns:
        assert len(json.dumps(body, separators=(",", ":"))) <= 8192
        services = {op["Service"]["Service"]["ID"] for op in body if "Service" in op}
        documents = {op["KV"]["Key"] for op in body if "KV" in op}
        assert documents == {full_entry.document_key("host-1", "worker", i) for i in services}
    listed = {i.entry.id: i.entry for i in consul.entries()}
    assert all(listed[e.id].document == e.document for e in entries)

    spy.txns.clear()
    result = consul.apply(Changes(delete=tuple(entries)))
    assert result.written == {"delete": 30}
    for body in spy.txns:
        services = {op["Service"]["Service"]["ID"] for op in body if "Service" in op}
        documents = {op["KV"]["Key"] for op in body if "KV" in op}
        assert documents == {full_entry.document_key("host-1", "worker", i) for i in services}
    assert consul.snapshot().owned == {}


def test_an_entry_too_big_for_any_transaction_is_refused_alone(
    registry: tuple[ConsulRegistry, SpyClient],
) -> None:
    consul, _ = registry
    small = [full(f"ok-{i}") for i in range(3)]
    huge = full("huge-1", signature="x" * 9000)  # its document alone passes 8192 bytes
    consul.snapshot()
    result = consul.apply(Changes(create=(small[0], huge, *small[1:])))
    assert [r.id for r in result.refused] == ["huge-1"]
    assert "max_txn_bytes" in result.refused[0].reason
    assert result.written == {"create": 3}
    assert sorted(consul.snapshot().owned) == ["ok-0", "ok-1", "ok-2"]


def test_the_node_rides_in_the_first_transaction_only_and_the_rest_are_full() -> None:
    """A cold sync: the node's registration (the writer claim, a check-and-set) goes in
    the first transaction; once it is applied, the node is held and the later ones carry
    max_ops operations of entries each (two an entry: its service and its check)."""
    with ConsulDouble(max_txn_ops=128) as double:
        client = SpyClient(ConsulEndpoint(double.address))
        consul = ConsulRegistry(
            client, Ownership(service="worker", owner="host-1", node="capsync-host-1"), max_ops=128
        )
        entries = [
            codec.encode(
                schema.validate({"id": f"w-{i:03}"}, ref="t"),
                codec.Provenance(service="worker", owner="host-1", source="file", ref=f"r{i}"),
            )
            for i in range(200)
        ]
        consul.snapshot()
        result = consul.apply(Changes(create=tuple(entries)))
        assert result.written == {"create": 200} and result.complete
        shapes = [[next(iter(op)) for op in body] for body in client.txns]
        assert shapes == [
            ["Node"] + ["Service", "Check"] * 63,
            ["Service", "Check"] * 64,
            ["Service", "Check"] * 64,
            ["Service", "Check"] * 9,
        ]
        assert len(consul.snapshot().owned) == 200
        client.close()
