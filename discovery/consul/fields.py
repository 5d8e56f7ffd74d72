"""An Entry in the JSON shape Consul stores and returns for a service instance."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import msgspec

from discovery.codec import OWNER, Entry
from discovery.health import PASSING, Health

# Sent explicitly on every write: what Consul fills in for an omitted Weights differs
# between endpoints, and a difference would show up as a spurious diff.
WEIGHTS = {"Passing": 1, "Warning": 1}


def service_fields(entry: Entry) -> dict[str, Any]:
    return {
        "ID": entry.id,
        "Service": entry.service,
        "Tags": list(entry.tags),
        "Meta": dict(entry.meta),
        "Address": entry.address,
        "Port": entry.port,
        "Weights": WEIGHTS,
    }


# Entry field -> (node-services key, catalog-service key, type, default when null).
_FIELDS: tuple[tuple[str, str, str, type, Any], ...] = (
    ("id", "ID", "ServiceID", str, None),
    ("service", "Service", "ServiceName", str, None),
    ("tags", "Tags", "ServiceTags", list, []),
    ("meta", "Meta", "ServiceMeta", dict, {}),
    ("address", "Address", "ServiceAddress", str, ""),
    ("port", "Port", "ServicePort", int, 0),
)
_STR = frozenset({str})


def entry_from_service(service: Any) -> Entry:
    """Read back a node-services object (``ID``, ``Service``, ``Tags``...) or a
    catalog-service one (the same fields prefixed: ``ServiceID``, ``ServiceName``...).

    ValueError when the object is not of that shape: a wrong answer is not data. It runs
    for every instance of every snapshot, so the checks stay in C where they can (JSON
    object keys are always strings; only the values need a look).
    """
    if not isinstance(service, dict):
        raise ValueError(f"a service instance must be a JSON object, not {type(service).__name__}")
    catalog = "ServiceName" in service
    values: dict[str, Any] = {}
    for name, plain, prefixed, expected, default in _FIELDS:
        key = prefixed if catalog else plain
        value = service.get(key)
        if value is None and default is not None:
            value = default
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ValueError(f"{key} is {type(value).__name__}, expected {expected.__name__}")
        values[name] = value
    if not {*map(type, values["tags"]), *map(type, values["meta"].values())} <= _STR:
        prefix = "Service" if catalog else ""
        raise ValueError(f"{prefix}Tags must hold strings and {prefix}Meta string pairs")
    values["tags"] = tuple(values["tags"])
    return Entry(**values)


class Service(msgspec.Struct, frozen=True):
    """A node-services instance decoded straight from Consul's answer, with only the
    fields an Entry holds: the rest of what Consul sends (Weights, Proxy, Connect,
    indexes...) is skipped by the decoder, never built. The same rules as
    ``entry_from_service``: ID and Service strings, Tags strings, Meta string pairs,
    Address a string and Port an integer (never a boolean), a null or missing one of
    the last four its empty value."""

    id: str = msgspec.field(name="ID")
    service: str = msgspec.field(name="Service")
    tags: tuple[str, ...] | None = msgspec.field(default=None, name="Tags")
    meta: dict[str, str] | None = msgspec.field(default=None, name="Meta")
    address: str | None = msgspec.field(default="", name="Address")
    port: int | None = msgspec.field(default=0, name="Port")

    @property
    def owner(self) -> str:
        return (self.meta or {}).get(OWNER, "")

    def entry(self, health: Health = PASSING) -> Entry:
        """The Entry, holding the decoded tags and meta themselves (no copy)."""
        return Entry(
            id=self.id,
            service=self.service,
            tags=self.tags or (),
            meta=self.meta or {},
            address=self.address or "",
            port=self.port or 0,
            health=health,
        )


class Node(msgspec.Struct, frozen=True):
    """A node as node-services answers it: what capsync reads of it."""

    modify_index: Annotated[int, msgspec.Meta(ge=0)] = msgspec.field(name="ModifyIndex")
    meta: dict[str, str] | None = msgspec.field(default=None, name="Meta")


class NodeServices(msgspec.Struct, frozen=True):
    """``/v1/catalog/node-services/<node>``: the node (null when it is not registered)
    and its services, each left as its bytes until ``services`` decodes it: a full read
    of 50,000 never holds every one decoded at once."""

    node: Node | None = msgspec.field(default=None, name="Node")
    raw_services: list[msgspec.Raw] | None = msgspec.field(default=None, name="Services")

    def services(self) -> Iterator[Service]:
        """Each service, decoded as it is reached; msgspec.ValidationError naming where
        (``$.Services[i]...``) for one not of the shape."""
        for index, raw in enumerate(self.raw_services or ()):
            try:
                yield msgspec.json.decode(raw, type=Service)
            except msgspec.ValidationError as exc:
                where, said = f"$.Services[{index}]", str(exc)
                at = said.replace(" - at `$", f" - at `{where}", 1)
                raise msgspec.ValidationError(
                    at if at != said else f"{said} - at `{where}`"
                ) from None
