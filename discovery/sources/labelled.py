"""What the docker and swarm sources share: objects of one Docker engine whose labels
carry a declaration, listed in one call and followed through the engine's events."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, NamedTuple, TypeVar

from config.errors import SourceError
from discovery.health import PASSING, Health
from discovery.kinds import BuildContext, Kind, field_arg
from discovery.sources.base import Listing, from_text
from discovery.sources.docker_engine import Engine, EngineSourceSettings


class Labelled(NamedTuple):
    """One engine object as a source sees it."""

    ref: str
    name: str
    labels: dict[str, str]
    address: str = ""
    health: Health = PASSING  # what the engine says of the object's state and probes


@dataclass
class LabelledSource(ABC):
    name: str
    label: str = "worker.capabilities"
    base_url: str | None = None
    docker_host: str | None = None  # $DOCKER_HOST, handed over by the settings
    engine: Engine = field(init=False)

    object_type: ClassVar[str]  # "container" or "service": the event type and the log wording
    events: ClassVar[tuple[str, ...]]

    def __post_init__(self) -> None:
        self.engine = Engine(self.name, self.base_url, docker_host=self.docker_host)

    def list(self) -> Listing:
        """Only a clean answer is data: an engine error raises (Engine.api), and so does
        an answer that is not the documented list of objects."""
        with self.engine.api(f"listing {self.object_type}s") as api:
            answer = self.list_objects(api)
        try:
            objects = [self.parse(item) for item in answer]
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            raise SourceError(
                f"source {self.name}: the Docker engine answered listing "
                f"{self.object_type}s with an unexpected shape "
                f"({type(exc).__name__}: {exc})"
            ) from None
        if not all(
            isinstance(item.labels, dict) and isinstance(item.labels.get(self.label), str)
            for item in objects
        ):
            raise SourceError(
                f"source {self.name}: the Docker engine answered listing "
                f"{self.object_type}s with labels that are not strings"
            )
        listing = Listing()
        for item in objects:
            self._add(listing, item)
        return listing

    def watch(self, notify: Callable[[str], None], stop: threading.Event) -> None:
        def on_event(event: dict[str, Any]) -> None:
            attributes = (event.get("Actor") or {}).get("Attributes") or {}
            name, action = attributes.get("name", "?"), event.get("Action")
            notify(f"{self.name} {self.object_type} {name} {action}")

        self.engine.watch(
            {"type": self.object_type, "event": list(self.events), **self.event_filters()},
            on_event,
            lambda: notify(f"{self.name} event stream reconnected"),
            stop,
        )

    @abstractmethod
    def list_objects(self, api: Any) -> Any:
        """The engine's raw answer: its objects carrying ``self.label``."""

    @abstractmethod
    def parse(self, item: Any) -> Labelled:
        """One raw object; KeyError, TypeError... when it is not of the documented shape."""

    def event_filters(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        """Drop the engine connection; a running ``watch`` sees its stop event within
        0.2 s and its stream is closed (the Runtime sets the event before closing)."""
        self.engine.reset()

    def _add(self, listing: Listing, item: Labelled) -> None:
        declaration = from_text(
            self.name, item.ref, item.labels[self.label], default_id=item.name, address=item.address
        )
        if item.health != PASSING:
            declaration = replace(declaration, health=item.health)
        listing.declarations.append(declaration)


L = TypeVar("L", bound=LabelledSource)


def engine_kind(
    name: str, settings: type[EngineSourceSettings], source: type[L]
) -> Kind[EngineSourceSettings, L]:
    """The kind of a Docker engine source: its argument is the engine's host."""

    def build(chosen: EngineSourceSettings, ctx: BuildContext) -> L:
        return source(
            name=chosen.name,
            label=chosen.label,
            base_url=chosen.host,
            docker_host=chosen.docker_host,
        )

    return Kind(name, settings, "[HOST]", field_arg("host", required=False), build)
