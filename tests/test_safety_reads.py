"""Only a clean answer is data (issue 10, point 1).

Through the CLI, against the Consul double behind a fault-injecting proxy: an answer
that is not Consul's documented success (a rate limit, a proxy's page, a gateway error,
a body cut short, JSON of the wrong shape) fails that read. A failed source read keeps
its entries; a failed registry read writes nothing; find/list/show exit non-zero.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from email.utils import formatdate
from typing import Any

import pytest

from config.errors import SourceError
from discovery.consul.client import ConsulClient, ConsulEndpoint
from discovery.sources.consul import ConsulSource
from tests.conftest import run_cli
from tests.consul_target import ConsulTarget
from tests.doubles.consul import ConsulDouble
from tests.doubles.faultproxy import Fault, FaultProxy, html


@pytest.fixture
def proxied() -> Iterator[tuple[ConsulTarget, FaultProxy]]:
    with ConsulDouble() as double, FaultProxy(double.address) as proxy:
        yield ConsulTarget(double.address, double), proxy


def run(proxy: FaultProxy, target: ConsulTarget, *args: str):
    return run_cli(*args, "--owner", target.owner, env={"CONSUL_HTTP_ADDR": proxy.address})


def register_legacy(target: ConsulTarget, count: int) -> None:
    for i in range(count):
        declaration = {"id": f"legacy-{i}", "fuzzing_tools": [{"tool_name": "afl"}]}
        assert (
            target.put(
                "/v1/catalog/register",
                {
                    "Node": "legacy-host",
                    "Address": "10.0.0.9",
                    "Service": {
                        "ID": f"legacy-{i}",
                        "Service": "legacy",
                        "Meta": {"worker-capabilities": json.dumps(declaration)},
                    },
                },
            ).status_code
            == 200
        )


# Each an answer no read may take for data. Different classes: status codes a proxy or
# a limiter sends, bodies that are not JSON, JSON that is not the documented shape.
NOT_DATA = {
    "429-retry-after": Fault(429, b"rate limit exceeded", {"Retry-After": "7"}),
    "401-proxy": html(401, **{"WWW-Authenticate": "Basic"}),
    "404-html": html(404),
    "407-proxy": html(407, **{"Proxy-Authenticate": "Basic"}),
    "502-gateway": html(502),
    "503-unavailable": Fault(503, b"", {"Retry-After": "1"}),
    "200-html": Fault(200, b"<html>captive portal</html>", {"Content-Type": "text/html"}),
    "truncated": Fault(truncate=True),
    "object-not-list": Fault(reshape=lambda body: {"items": body}),
    "instances-not-objects": Fault(reshape=lambda body: [i["ServiceID"] for i in body]),
    "meta-not-object": Fault(reshape=lambda body: [{**i, "ServiceMeta": ["x"]} for i in body]),
}


def _checks_fault(fault: Fault) -> Fault:
    """A list of checks has no meta: its shape fault is a status that is not a string."""
    if fault is not NOT_DATA["meta-not-object"]:
        return fault
    return Fault(reshape=lambda body: [{**check, "Status": ["x"]} for check in body])


# Both reads of the consul source: the instances, and their checks (their health).
@pytest.mark.parametrize("path", ["/v1/catalog/service/legacy", "/v1/health/checks/legacy"])
@pytest.mark.parametrize("fault", list(NOT_DATA.values()), ids=list(NOT_DATA))
def test_failed_source_read_keeps_its_entries(
    proxied: tuple[ConsulTarget, FaultProxy], fault: Fault, path: str
) -> None:
    target, proxy = proxied
    register_legacy(target, 12)
    first = run(proxy, target, "run", "--once", "--source", "consul:legacy")
    assert first.returncode == 0 and "12 created" in first.stdout, first.stderr
    before = target.services()

    if "health" in path:  # a check, so that a reshaped list of checks is not empty
        check = {"CheckID": "up", "Name": "up", "Status": "passing", "ServiceID": "legacy-0"}
        body = {"Node": "legacy-host", "SkipNodeUpdate": True, "Check": check}
        assert target.put("/v1/catalog/register", body).status_code == 200
    proxy.inject("GET", path, fault if "catalog" in path else _checks_fault(fault))
    result = run(proxy, target, "run", "--once", "--source", "consul:legacy")

    assert proxy.hits, "the fault was never served"
    assert result.returncode == 1, result.stdout
    assert "event=source_failed source=consul" in result.stderr
    assert "0 deleted" in result.stdout and "12 kept" in result.stdout
    assert target.services() == before
    if fault.status == 429:
        assert "retry after 7s" in result.stderr


# Both reads of a Consul snapshot: the node's services, and its checks (their health).
@pytest.mark.parametrize("path", ["/v1/catalog/node-services/", "/v1/health/node/"])
@pytest.mark.parametrize("fault", list(NOT_DATA.values()), ids=list(NOT_DATA))
def test_failed_registry_read_writes_nothing(
    proxied: tuple[ConsulTarget, FaultProxy], fault: Fault, path: str, tmp_path: Any
) -> None:
    target, proxy = proxied
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    for name in ("a", "b", "c"):
        (fleet / f"{name}.json").write_text(json.dumps({"id": name}))
    assert run(proxy, target, "run", "--once", "--source", f"file:{fleet}").returncode == 0
    (fleet / "a.json").unlink()
    (fleet / "d.json").write_text('{"id": "d"}')
    before, writes = target.services(), target.writes()

    if fault.reshape is not None and "node-services" in path:  # an object, not a list
        fault = Fault(reshape=lambda body: {"Node": body["Node"], "Services": {"x": 1}})
    elif "health" in path:
        fault = _checks_fault(fault)
    proxy.inject("GET", path, fault)
    result = run(proxy, target, "run", "--once", "--source", f"file:{fleet}", "--allow-mass-delete")

    assert result.returncode == 1
    assert "registry_failed" in result.stderr and "Traceback" not in result.stderr
    assert target.writes() == writes and target.services() == before


@pytest.mark.parametrize("command", [["list"], ["find", "--has", "clippy"], ["show", "a"]])
@pytest.mark.parametrize(
    "fault",
    [
        NOT_DATA["429-retry-after"],
        NOT_DATA["404-html"],
        NOT_DATA["truncated"],
        NOT_DATA["object-not-list"],
    ],
    ids=["429", "404-html", "truncated", "wrong-shape"],
)
def test_queries_fail_loudly_instead_of_printing_nothing(
    proxied: tuple[ConsulTarget, FaultProxy], command: list[str], fault: Fault, tmp_path: Any
) -> None:
    target, proxy = proxied
    (tmp_path / "a.json").write_text(
        '{"id": "a", "static_analysis_tools": [{"tool_name": "clippy"}]}'
    )
    assert run(proxy, target, "run", "--once", "--source", f"file:{tmp_path}").returncode == 0
    proxy.inject("GET", f"/v1/catalog/service/{target.service}", fault)
    result = run(proxy, target, *command)
    assert result.returncode == 1 and result.stdout == ""
    assert "Consul" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("header", ["7", "date"], ids=["seconds", "http-date"])
def test_retry_after_travels_on_the_error(
    proxied: tuple[ConsulTarget, FaultProxy], header: str
) -> None:
    _, proxy = proxied
    value = header if header != "date" else formatdate(time.time() + 30, usegmt=True)
    proxy.inject(
        "GET", "/v1/catalog/service/legacy", Fault(429, b"slow down", {"Retry-After": value})
    )
    source = ConsulSource(
        ConsulClient(ConsulEndpoint(proxy.address), error=SourceError), services=["legacy"]
    )
    with pytest.raises(SourceError) as failed:
        source.list()
    assert failed.value.retry_after is not None
    assert (
        (failed.value.retry_after == 7.0)
        if header == "7"
        else (20 < failed.value.retry_after <= 30)
    )


def _node_services(fault: Any) -> Fault:
    """The node-services answer with every owned instance reshaped by ``fault``."""
    return Fault(
        reshape=lambda body: {**body, "Services": [fault(dict(s)) for s in body["Services"]]}
    )


# What real Consul may send and the registry must take as it is: fields capsync does not
# read (Consul adds some in every version), nulls where Consul writes null.
ACCEPTED = {
    "unknown-fields": lambda s: {**s, "Datacenter": "dc1", "Extra": {"a": [1, None]}},
    "null-address-port": lambda s: {**s, "Address": None, "Port": None},
}
# Shapes no Consul answers: read as the registry's error, never as data.
REFUSED = {
    "port-boolean": lambda s: {**s, "Port": True},
    "port-float": lambda s: {**s, "Port": 1.5},
    "tag-not-string": lambda s: {**s, "Tags": [*s["Tags"], 7]},
    "meta-value-not-string": lambda s: {**s, "Meta": {**s["Meta"], "k": None}},
    "id-null": lambda s: {**s, "ID": None},
}


@pytest.mark.parametrize("name", [*ACCEPTED, *REFUSED])
def test_registry_read_takes_what_consul_sends_and_refuses_other_shapes(
    proxied: tuple[ConsulTarget, FaultProxy], name: str, tmp_path: Any
) -> None:
    target, proxy = proxied
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    for worker in ("a", "b"):
        (fleet / f"{worker}.json").write_text(json.dumps({"id": worker}))
    assert run(proxy, target, "run", "--once", "--source", f"file:{fleet}").returncode == 0
    before, writes = target.services(), target.writes()

    proxy.inject("GET", "/v1/catalog/node-services/", _node_services({**ACCEPTED, **REFUSED}[name]))
    result = run(proxy, target, "run", "--once", "--source", f"file:{fleet}")

    assert proxy.hits, "the fault was never served"
    assert "Traceback" not in result.stderr
    if name in ACCEPTED:
        assert result.returncode == 0, result.stderr
        assert "2 unchanged" in result.stdout
    else:
        assert result.returncode == 1
        assert "registry_failed" in result.stderr and "wrong shape" in result.stderr
        assert "at `$.Services[" in result.stderr  # where, though decoded one by one
    assert target.writes() == writes and target.services() == before


def test_a_node_without_its_modify_index_is_refused(
    proxied: tuple[ConsulTarget, FaultProxy], tmp_path: Any
) -> None:
    target, proxy = proxied
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "a.json").write_text('{"id": "a"}')
    assert run(proxy, target, "run", "--once", "--source", f"file:{fleet}").returncode == 0
    writes = target.writes()

    node = Fault(
        reshape=lambda body: {**body, "Node": {"Node": body["Node"]["Node"], "Meta": None}}
    )
    proxy.inject("GET", "/v1/catalog/node-services/", node)
    result = run(proxy, target, "run", "--once", "--source", f"file:{fleet}")

    assert result.returncode == 1 and "ModifyIndex" in result.stderr
    assert target.writes() == writes
