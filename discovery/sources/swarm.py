"""The swarm source: on a swarm manager, services whose spec labels carry a declaration.

One entry per service (not per task): the id defaults to the service name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from discovery.sources.labelled import Labelled, LabelledSource


@dataclass
class SwarmSource(LabelledSource):
    name: str = "swarm"
    kind = "service"
    events = ("create", "update", "remove")

    def list_objects(self, api: Any) -> Any:
        return api.services(filters={"label": self.label})

    def parse(self, item: Any) -> Labelled:
        spec = item.get("Spec") or {}
        name = spec.get("Name") or item["ID"][:12]
        return Labelled(f"{item['ID'][:12]}/{name}", name, spec.get("Labels") or {})
