"""The swarm source: on a swarm manager, services whose spec labels carry a declaration.

One entry per service (not per task): the id defaults to the service name. Its health is
its tasks' (the list's ``ServiceStatus``, asked for with the list, so no other request):
every desired task running is passing, some is warning, none is critical. Task changes
raise no service event: a service's health is read at each cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from config.settings import SourceName
from discovery.health import PASSING, Health
from discovery.sources.docker_engine import EngineSourceSettings
from discovery.sources.labelled import Labelled, LabelledSource, engine_kind


@dataclass
class SwarmSource(LabelledSource):
    name: str = "swarm"
    object_type = "service"
    events = ("create", "update", "remove")

    def list_objects(self, api: Any) -> Any:
        return api.services(filters={"label": self.label}, status=True)

    def parse(self, item: Any) -> Labelled:
        spec = item.get("Spec") or {}
        name = spec.get("Name") or item["ID"][:12]
        labels = spec.get("Labels") or {}
        return Labelled(f"{item['ID'][:12]}/{name}", name, labels, health=_tasks(item))


def _tasks(service: dict[str, Any]) -> Health:
    """Running tasks against desired ones (an engine too old to count them: passing)."""
    status = service.get("ServiceStatus") or {}
    running, desired = status.get("RunningTasks"), status.get("DesiredTasks")
    if not isinstance(running, int) or not isinstance(desired, int):
        return PASSING
    said = f"swarm: {running}/{desired} tasks running"
    if desired > 0 and running >= desired:
        return PASSING
    return Health("critical" if running == 0 else "warning", said)


class SwarmSourceSettings(EngineSourceSettings):
    """Swarm services, read from a manager."""

    type: Literal["swarm"]
    name: SourceName = "swarm"


KIND = engine_kind("swarm", SwarmSourceSettings, SwarmSource)
