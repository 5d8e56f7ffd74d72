"""The docker source: running containers of one engine carrying the capabilities label.

Image labels reach containers, so a Dockerfile ``LABEL worker.capabilities=...`` (the
seed's example) declares every container of that image. The id defaults to the
container name; the address is the container's IP when it has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from config.settings import SourceName
from discovery.sources.docker_engine import EngineSourceSettings
from discovery.sources.labelled import Labelled, LabelledSource, engine_kind


@dataclass
class DockerSource(LabelledSource):
    name: str = "docker"
    object_type = "container"
    events = ("start", "die", "destroy", "rename", "update")

    def list_objects(self, api: Any) -> Any:
        return api.containers(filters={"label": self.label, "status": "running"})

    def parse(self, item: Any) -> Labelled:
        return _container(item)

    def event_filters(self) -> dict[str, str]:
        # Container events carry the container's labels, so the engine filters for us.
        return {"label": self.label}


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
