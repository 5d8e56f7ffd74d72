"""A source that lists what the test tells it to: fast Syncer tests without files or
servers. ``declarations`` is what the next ``list()`` returns; ``failure`` makes it fail."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from config.errors import SourceError
from discovery.health import PASSING, Health
from discovery.sources.base import Declaration, Listing, from_text


@dataclass
class ScriptedSource:
    name: str = "scripted"
    declarations: list[dict[str, Any]] = field(default_factory=list)
    failure: str = ""
    listed: int = 0
    # worker id -> the health its place reports (absent: passing)
    health: dict[str, Health] = field(default_factory=dict)
    # list the declarations as text, fingerprinted by it (validated once, as a label is)
    as_text: bool = False

    def list(self) -> Listing:
        self.listed += 1
        if self.failure:
            raise SourceError(f"{self.name}: {self.failure}")
        return Listing(declarations=[self._declaration(data) for data in self.declarations])

    def _declaration(self, data: dict[str, Any]) -> Declaration:
        ref, health = f"{self.name}/{data.get('id')}", self.health.get(data.get("id"), PASSING)
        if self.as_text:
            return replace(from_text(self.name, ref, json.dumps(data)), health=health)
        return Declaration(source=self.name, ref=ref, data=data, health=health)
