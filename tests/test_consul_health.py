"""Consul: one capsync check per entry, in the same transaction as its service, updated
only when its status changes, so ``/v1/health/service/<name>?passing`` answers live
workers only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from daemon.cycle import Syncer
from daemon.registry.consul import ConsulRegistry, check_id
from daemon.registry.ownership import Ownership
from daemon.registry_sync import RegistrySync, SyncOptions
from discovery.consul.client import ConsulClient, ConsulEndpoint
from discovery.health import Health
from discovery.sources.consul import ConsulSource
from tests.consul_target import ConsulTarget, needs_double
from tests.scripted_source import ScriptedSource
from tests.test_consul_batches import SpyClient

CRITICAL = Health("critical", "docker: unhealthy (3 failed probes)")
WARNING = Health("warning", "websocket: disconnected, in grace")


class Fleet:
    def __init__(self, consul: ConsulTarget) -> None:
        self.consul = consul
        self.client = SpyClient(ConsulEndpoint(consul.address))
        self.registry = ConsulRegistry(
            self.client, Ownership(service="worker", owner=consul.owner, node=consul.node)
        )
        self.source = ScriptedSource(
            declarations=[
                {"id": "w1", "static_analysis_tools": [{"tool_name": "clippy"}]},
                {"id": "w2", "static_analysis_tools": [{"tool_name": "clippy"}]},
            ],
            as_text=True,
        )
        options = SyncOptions(service="worker", owner=consul.owner)
        self.syncer = Syncer([self.source], [RegistrySync("consul", self.registry, options)])

    def cycle(self) -> int:
        self.client.txns.clear()
        report = self.syncer.run_once()
        assert report.ok, report
        changes = report.registries[0].changes
        assert changes is not None
        return changes.writes

    def passing(self, **params: str) -> list[str]:
        rows = self.consul.get("/v1/health/service/worker", passing="", **params)
        return sorted(
            row["Service"]["ID"] for row in rows if row["Node"]["Node"] == self.consul.node
        )

    def checks(self) -> dict[str, dict[str, Any]]:
        rows = self.consul.get(f"/v1/health/node/{self.consul.node}")
        return {row["CheckID"]: row for row in rows}


@pytest.fixture
def fleet(consul: ConsulTarget) -> Iterator[Fleet]:
    fleet = Fleet(consul)
    yield fleet
    fleet.registry.close()


def test_each_entry_gets_its_check_in_the_same_transaction(fleet: Fleet) -> None:
    assert fleet.cycle() == 2
    [txn] = fleet.client.txns
    ops = [(next(iter(op)), next(iter(op.values()))) for op in txn]
    services = [body["Service"]["ID"] for kind, body in ops if kind == "Service"]
    checks = [body["Check"]["ServiceID"] for kind, body in ops if kind == "Check"]
    assert services == checks == ["w1", "w2"]
    checks_read = fleet.checks()
    assert {c: (row["Status"], row["ServiceID"]) for c, row in checks_read.items()} == {
        "capsync:w1": ("passing", "w1"),
        "capsync:w2": ("passing", "w2"),
    }
    assert checks_read["capsync:w1"]["Output"] == "capsync: scripted, passing"
    assert fleet.passing() == ["w1", "w2"]


def test_a_worker_going_critical_leaves_the_passing_answer_and_comes_back(fleet: Fleet) -> None:
    fleet.cycle()
    fleet.source.health["w1"] = CRITICAL
    assert fleet.cycle() == 1
    # one transaction holding the check alone: the service is not rewritten
    assert [[next(iter(op)) for op in txn] for txn in fleet.client.txns] == [["Check"]]
    assert fleet.passing() == ["w2"]
    check = fleet.checks()[check_id("w1")]
    assert (check["Status"], check["Output"]) == ("critical", CRITICAL.output)
    # a reworded output with the same status writes nothing
    fleet.source.health["w1"] = Health("critical", "docker: unhealthy (9 failed probes)")
    assert fleet.cycle() == 0 and fleet.client.txns == []
    fleet.source.health["w1"] = WARNING
    assert fleet.cycle() == 1
    assert fleet.passing() == ["w2"]  # ?passing keeps passing only, warning is out
    del fleet.source.health["w1"]
    assert fleet.cycle() == 1
    assert fleet.passing() == ["w1", "w2"]


def test_a_steady_cycle_reads_twice_and_writes_nothing(fleet: Fleet) -> None:
    needs_double(fleet.consul)
    assert fleet.consul.double is not None
    fleet.source.health["w2"] = CRITICAL
    fleet.cycle()
    services = ("GET", f"/v1/catalog/node-services/{fleet.consul.node}")
    checks = ("GET", f"/v1/health/node/{fleet.consul.node}")
    fleet.consul.double.reset_counts()
    assert fleet.cycle() == 0
    # After a write, a full read: the checks' index, the services, their checks.
    assert fleet.consul.double.requests == [checks, services, checks]
    fleet.consul.double.reset_counts()
    assert fleet.cycle() == 0
    # Steady: the two indexes alone (answers filtered to nothing), then no write.
    assert fleet.consul.double.requests == [services, checks]


def test_a_changed_declaration_with_the_same_health_keeps_its_check(fleet: Fleet) -> None:
    fleet.cycle()
    fleet.source.declarations[0]["static_analysis_tools"] = [{"tool_name": "semgrep"}]
    assert fleet.cycle() == 1
    assert [[next(iter(op)) for op in txn] for txn in fleet.client.txns] == [["Service"]]
    fleet.source.declarations[0]["static_analysis_tools"] = [{"tool_name": "rustfmt"}]
    fleet.source.health["w1"] = CRITICAL
    assert fleet.cycle() == 1  # one update, service and check in one transaction
    assert [[next(iter(op)) for op in txn] for txn in fleet.client.txns] == [["Service", "Check"]]
    assert fleet.checks()[check_id("w1")]["Status"] == "critical"


def test_a_deleted_entry_takes_its_check_with_it(fleet: Fleet) -> None:
    fleet.cycle()
    fleet.source.declarations.pop(0)
    fleet.cycle()
    assert sorted(fleet.checks()) == ["capsync:w2"]


@pytest.mark.parametrize("health", [Health(), CRITICAL], ids=["passing", "critical"])
def test_an_entry_written_before_health_existed_gets_its_check(
    fleet: Fleet, health: Health
) -> None:
    fleet.source.health["w1"] = health
    fleet.cycle()
    body = {"Node": fleet.consul.node, "CheckID": "capsync:w1"}
    assert fleet.consul.put("/v1/catalog/deregister", body).status_code == 200
    assert sorted(fleet.checks()) == ["capsync:w2"]
    assert fleet.cycle() == 1  # whatever its status: no check reads as passing in Consul
    assert fleet.checks()["capsync:w1"]["Status"] == health.status
    assert fleet.cycle() == 0


def test_a_case_only_rename_moves_the_check(fleet: Fleet) -> None:
    fleet.cycle()
    fleet.source.declarations[0]["id"] = "W1"
    fleet.source.health["W1"] = CRITICAL
    assert fleet.cycle() == 1
    checks = fleet.checks()
    assert {c.casefold() for c in checks} == {"capsync:w1", "capsync:w2"}
    assert checks["capsync:W1"]["ServiceID"] == "W1"
    assert checks["capsync:W1"]["Status"] == "critical"


def test_a_flapping_worker_costs_no_write_per_flap(fleet: Fleet) -> None:
    clock = [1000.0]
    fleet.syncer.clock = lambda: clock[0]
    fleet.syncer.damper.min_seconds = 30
    fleet.cycle()
    writes = 0
    for flap in range(20):  # a flap every second
        clock[0] += 1
        fleet.source.health["w1"] = CRITICAL if flap % 2 == 0 else Health()
        writes += fleet.cycle()
    assert writes == 0 and fleet.passing() == ["w1", "w2"]
    clock[0] = 1031.0  # failing still, and passing was shown for 30 s: now it shows
    fleet.source.health["w1"] = CRITICAL
    assert fleet.cycle() == 1 and fleet.passing() == ["w2"]


# -- the consul source: the checks of the services it reads ---------------------------


def test_the_consul_source_reads_the_health_of_the_services_it_lists(
    consul: ConsulTarget,
) -> None:
    for node, worker in (("ci-1", "b-1"), ("ci-2", "b-2")):
        body = {
            "Node": node,
            "Address": "10.0.0.9",
            "Service": {"ID": worker, "Service": "builders", "Meta": {"worker-capabilities": "{}"}},
        }
        assert consul.put("/v1/catalog/register", body).status_code == 200
    for name, status, output in (("disk", "passing", "ok"), ("http", "critical", "503\n")):
        body = {
            "Node": "ci-2",
            "SkipNodeUpdate": True,
            "Check": {
                "CheckID": name,
                "Name": name,
                "Status": status,
                "Output": output,
                "ServiceID": "b-2",
            },
        }
        assert consul.put("/v1/catalog/register", body).status_code == 200
    source = ConsulSource(ConsulClient(ConsulEndpoint(consul.address)), services=["builders"])
    try:
        health = {d.ref: d.health for d in source.list().declarations}
    finally:
        source.close()
    assert health == {
        "ci-1/b-1": Health(),  # no checks: passing, as Consul counts it
        "ci-2/b-2": Health("critical", "consul: check 'http' critical: 503"),
    }
    fleet = Fleet(consul)
    fleet.syncer = Syncer(
        [ConsulSource(ConsulClient(ConsulEndpoint(consul.address)), services=["builders"])],
        fleet.syncer.registries,
    )
    try:
        fleet.cycle()
        assert fleet.passing() == ["b-1"]
    finally:
        fleet.syncer.sources[0].close()
        fleet.registry.close()
