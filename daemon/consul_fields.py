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
    """Read back a node-services (``Service``) or catalog-service (``ServiceName``) object."""
    if "ServiceName" in service:
        return Entry(
            id=service["ServiceID"],
            service=service["ServiceName"],
            tags=tuple(service.get("ServiceTags") or ()),
            meta=service.get("ServiceMeta") or {},
            address=service.get("ServiceAddress") or "",
            port=service.get("ServicePort") or 0,
        )
    return Entry(
        id=service["ID"],
        service=service["Service"],
        tags=tuple(service.get("Tags") or ()),
        meta=service.get("Meta") or {},
        address=service.get("Address") or "",
        port=service.get("Port") or 0,
    )
