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


def entry_from_service(service: dict[str, Any]) -> Entry:
    """Read back a node-services object (``ID``, ``Service``, ``Tags``...) or a
    catalog-service one (the same fields prefixed: ``ServiceID``, ``ServiceName``...)."""
    p = "Service" if "ServiceName" in service else ""
    return Entry(
        id=service[f"{p}ID"],
        service=service["ServiceName" if p else "Service"],
        tags=tuple(service.get(f"{p}Tags") or ()),
        meta=service.get(f"{p}Meta") or {},
        address=service.get(f"{p}Address") or "",
        port=service.get(f"{p}Port") or 0,
    )
