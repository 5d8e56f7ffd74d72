"""The docker source: running containers of one engine carrying the capabilities label.

Image labels reach containers, so a Dockerfile ``LABEL worker.capabilities=...`` (the
seed's example) declares every container of that image. The id defaults to the
container name; the address is the container's IP when it has one. Each container's
health is its HEALTHCHECK's (``discovery.sources.docker_health``): starting is warning,
unhealthy critical, no probe or healthy passing; Docker's ``health_status`` events
trigger a sync, so a probe's verdict reaches the registries within seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import docker.errors

from config.settings import SourceName
from discovery.sources.docker_engine import EngineSourceSettings
from discovery.sources.docker_health import ContainerHealth
from discovery.sources.labelled import Labelled, LabelledSource, engine_kind


@dataclass
class DockerSource(LabelledSource):
    name: str = "docker"
    object_type = "container"
    # health_status: the engine matches "health_status: unhealthy" and the others by prefix
    events = ("start", "die", "destroy", "rename", "update", "health_status")
    probes: ContainerHealth = field(default_factory=ContainerHealth, init=False)

    def list_objects(self, api: Any) -> Any:
        containers = api.containers(filters={"label": self.label, "status": "running"})
        if isinstance(containers, list) and all(isinstance(c, dict) for c in containers):
            self.probes.of(containers, partial(_inspect, api))
        return containers

    def parse(self, item: Any) -> Labelled:
        return _container(item)._replace(health=self.probes.get(item["Id"]))

    def event_filters(self) -> dict[str, str]:
        # Container events carry the container's labels, so the engine filters for us.
        return {"label": self.label}


def _inspect(api: Any, cid: str) -> dict[str, Any]:
    """The container's details; {} when it went away since the list (its health then
    says no more than its state; the next listing drops it)."""
    try:
        found: dict[str, Any] = api.inspect_container(cid)
    except docker.errors.NotFound:
        return {}
    return found


def _container(container: dict[str, Any]) -> Labelled:
    name = (container.get("Names") or ["/" + container["Id"][:12]])[0].lstrip("/")
    networks = (container.get("NetworkSettings") or {}).get("Networks") or {}
    address = next(
        (
            str(net["IPAddress"])
            for _, net in sorted(networks.items())
            if (net or {}).get("IPAddress")
        ),
        "",
    )
    return Labelled(f"{container['Id'][:12]}/{name}", name, container.get("Labels") or {}, address)


class DockerSourceSettings(EngineSourceSettings):
    """Running containers."""

    type: Literal["docker"]
    name: SourceName = "docker"


KIND = engine_kind("docker", DockerSourceSettings, DockerSource)
