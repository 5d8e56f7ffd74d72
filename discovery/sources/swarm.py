"""The swarm source: on a swarm manager, services whose spec labels carry a declaration.

One entry per service (not per task): the id defaults to the service name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from config.settings import SourceName
from discovery.sources.docker_engine import EngineSourceSettings
from discovery.sources.labelled import Labelled, LabelledSource, engine_kind


@dataclass
class SwarmSource(LabelledSource):
    name: str = "swarm"
    object_type = "service"
    events = ("create", "update", "remove")

    def list_objects(self, api: Any) -> Any:
        return api.services(filters={"label": self.label})

    def parse(self, item: Any) -> Labelled:
        spec = item.get("Spec") or {}
        name = spec.get("Name") or item["ID"][:12]
        return Labelled(f"{item['ID'][:12]}/{name}", name, spec.get("Labels") or {})


class SwarmSourceSettings(EngineSourceSettings):
    """Swarm services, read from a manager."""

    type: Literal["swarm"]
    name: SourceName = "swarm"


KIND = engine_kind("swarm", SwarmSourceSettings, SwarmSource)
