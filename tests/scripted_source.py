"""A source that lists what the test tells it to: fast Syncer tests without files or
servers. ``declarations`` is what the next ``list()`` returns; ``failure`` makes it fail."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from config.errors import SourceError
from discovery.sources.base import Declaration, Listing


@dataclass
class ScriptedSource:
    name: str = "scripted"
    declarations: list[dict[str, Any]] = field(default_factory=list)
    failure: str = ""
    listed: int = 0

    def list(self) -> Listing:
        self.listed += 1
        if self.failure:
            raise SourceError(f"{self.name}: {self.failure}")
        return Listing(
            declarations=[
                Declaration(source=self.name, ref=f"{self.name}/{data.get('id')}", data=data)
                for data in self.declarations
            ]
        )
