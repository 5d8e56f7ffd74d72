"""An Entry in the JSON shape Consul stores and returns for a service instance."""

from __future__ import annotations

from typing import Any

from discovery.codec import Entry

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
