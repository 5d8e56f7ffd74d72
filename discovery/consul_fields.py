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


def entry_from_service(service: Any) -> Entry:
    """Read back a node-services object (``ID``, ``Service``, ``Tags``...) or a
    catalog-service one (the same fields prefixed: ``ServiceID``, ``ServiceName``...).

    ValueError when the object is not of that shape: a wrong answer is not data.
    """
    if not isinstance(service, dict):
        raise ValueError(f"a service instance must be a JSON object, not "
                         f"{type(service).__name__}")
    p = "Service" if "ServiceName" in service else ""
    fields: dict[str, tuple[str, type, Any]] = {
        "id": (f"{p}ID", str, None),
        "service": ("ServiceName" if p else "Service", str, None),
        "tags": (f"{p}Tags", list, []),
        "meta": (f"{p}Meta", dict, {}),
        "address": (f"{p}Address", str, ""),
        "port": (f"{p}Port", int, 0),
    }
    values: dict[str, Any] = {}
    for name, (key, kind, default) in fields.items():
        value = service.get(key)
        if value is None and default is not None:
            value = default
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{key} is {type(value).__name__}, expected {kind.__name__}")
        values[name] = value
    if not all(isinstance(t, str) for t in values["tags"]) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in values["meta"].items()
    ):
        raise ValueError(f"{p}Tags must hold strings and {p}Meta string pairs")
    return Entry(**{**values, "tags": tuple(values["tags"])})
