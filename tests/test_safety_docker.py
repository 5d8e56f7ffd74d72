"""The clean-answer rule for the Docker engine's answers (issue 10, point 1).

The engine is a fault-injecting HTTP endpoint speaking the Engine API: a listing that
is not the documented list of containers fails the source (its entries are kept), it
never reads as "no containers".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import Backend
from tests.doubles.faultproxy import Fault, FaultProxy, html
from tests.test_sync_contract import sync

LISTING = "/v1.43/containers/json"
CONTAINER = {
    "Id": "0123456789abcdef",
    "Names": ["/w1"],
    "State": "running",
    "Labels": {"worker.capabilities": '{"id": "w1"}'},
    "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.2"}}},
}


def json_fault(body: object) -> Fault:
    return Fault(200, json.dumps(body).encode(), {"Content-Type": "application/json"})


@pytest.fixture
def engine() -> Iterator[FaultProxy]:
    """An Engine API that answers only what each test injects (no upstream behind it)."""
    with FaultProxy("127.0.0.1:9") as proxy:
        proxy.inject("GET", "/version", json_fault({"ApiVersion": "1.43", "Version": "24.0"}))
        yield proxy


NOT_A_LISTING = {
    "object": json_fault({"containers": [CONTAINER]}),
    "strings": json_fault(["w1"]),
    "label-not-string": json_fault([{**CONTAINER, "Labels": {"worker.capabilities": 5}}]),
    "null": json_fault(None),
    "html-200": Fault(200, b"<html>proxy</html>", {"Content-Type": "text/html"}),
    "502": html(502),
}


@pytest.mark.parametrize("fault", list(NOT_A_LISTING.values()), ids=list(NOT_A_LISTING))
def test_engine_answer_of_the_wrong_shape_keeps_the_entries(
    engine: FaultProxy, fault: Fault, tmp_path: Path
) -> None:
    backend = Backend("sqlite", f"sqlite:{tmp_path / 'registry.db'}")  # the rule is the source's
    source = ("--source", f"docker:tcp://{engine.address}")
    engine.inject("GET", LISTING, Fault(**{**vars(json_fault([CONTAINER])), "count": 1}))
    first = sync(backend, *source)
    assert "1 created" in first.stdout, first.stderr
    before = backend.services()

    engine.inject("GET", LISTING, fault)
    result = sync(backend, *source)

    assert result.returncode == 1 and "event=source_failed source=docker" in result.stderr
    assert "1 kept" in result.stdout and "0 deleted" in result.stdout
    assert backend.services() == before
