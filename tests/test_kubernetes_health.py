"""A pod's health is its Ready condition: a pod losing Ready goes critical in Consul
(the watch brings the change), and passing again when it is Ready once more."""

from __future__ import annotations

from collections.abc import Callable

from daemon.cycle import Syncer
from daemon.registry.consul import ConsulRegistry
from daemon.registry.ownership import Ownership
from daemon.registry_sync import RegistrySync, SyncOptions
from discovery.consul.client import ConsulClient, ConsulEndpoint
from discovery.sources.kubernetes import KubernetesSource
from tests.consul_target import ConsulTarget
from tests.doubles.kubernetes import KubernetesDouble
from tests.kubernetes_helpers import (  # noqa: F401 - fixtures
    Watching,
    annotated,
    double,
    make_source,
)


def _health(source: KubernetesSource) -> dict[str, tuple[str, str]]:
    return {d.ref: (d.health.status, d.health.output) for d in source.list().declarations}


def test_a_pod_s_health_is_its_ready_condition(
    double: KubernetesDouble, make_source: Callable[..., KubernetesSource]
) -> None:
    double.put_pod("build", "ready", annotations=annotated('{"id": "a"}'))
    double.put_pod("build", "unready", annotations=annotated('{"id": "b"}'), ready=False)
    pod = double.put_pod("build", "silent", annotations=annotated('{"id": "c"}'))
    pod["status"]["conditions"] = []
    body = {"status": pod["status"], "spec": pod["spec"]}
    double.store.put("pods", "build", "silent", body, annotations=annotated('{"id": "c"}'))
    assert _health(make_source()) == {
        "build/ready": ("passing", ""),
        "build/unready": (
            "critical",
            "kubernetes: not Ready (ContainersNotReady: containers with unready status: [worker])",
        ),
        "build/silent": ("warning", "kubernetes: Running, no Ready condition reported yet"),
    }


def test_a_pod_losing_ready_goes_critical_in_consul_and_back(
    double: KubernetesDouble,
    make_source: Callable[..., KubernetesSource],
    consul: ConsulTarget,
) -> None:
    double.put_pod("build", "w-pod", annotations=annotated('{"id": "w-pod"}'))
    source = make_source()
    registry = ConsulRegistry(
        ConsulClient(ConsulEndpoint(consul.address)),
        Ownership(service="worker", owner=consul.owner, node=consul.node),
    )
    syncer = Syncer(
        [source], [RegistrySync("consul", registry, SyncOptions("worker", consul.owner))]
    )
    watching = Watching(source)

    def passing() -> list[str]:
        rows = consul.get("/v1/health/service/worker", passing="")
        return [r["Service"]["ID"] for r in rows if r["Node"]["Node"] == consul.node]

    try:
        syncer.run_once()
        assert passing() == ["w-pod"]
        double.put_pod("build", "w-pod", annotations=annotated('{"id": "w-pod"}'), ready=False)
        watching.expect("build/w-pod MODIFIED")  # the watch triggers the sync
        report = syncer.run_once()
        assert report.registries[0].changes is not None
        assert len(report.registries[0].changes.health) == 1  # not an update
        assert passing() == []
        [check] = [
            c for c in consul.get(f"/v1/health/node/{consul.node}") if c["ServiceID"] == "w-pod"
        ]
        assert check["Status"] == "critical" and "ContainersNotReady" in check["Output"]
        double.put_pod("build", "w-pod", annotations=annotated('{"id": "w-pod"}'))
        watching.expect("build/w-pod MODIFIED")
        syncer.run_once()
        assert passing() == ["w-pod"]
    finally:
        watching.finish()
        registry.close()
