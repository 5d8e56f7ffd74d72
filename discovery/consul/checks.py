"""Consul's health checks as capsync reads them: a clean answer only, each check of the
documented shape, and an instance's health the worst of its checks (as ``?passing``
judges it)."""

from __future__ import annotations

import msgspec

from discovery.consul.client import FILTERED_BY_ACLS, ConsulClient
from discovery.health import Health, status_of, worst


class Check(msgspec.Struct, frozen=True):
    """One check as Consul lists it, decoded with only these fields (each a string:
    missing or null is a wrong answer)."""

    node: str = msgspec.field(name="Node")
    check_id: str = msgspec.field(name="CheckID")
    name: str = msgspec.field(name="Name")
    service_id: str = msgspec.field(name="ServiceID")
    status: str = msgspec.field(name="Status")
    output: str = msgspec.field(name="Output")

    @property
    def health(self) -> Health:
        """As written: a status Consul has but capsync does not write (``maintenance``)
        is critical, as ``?passing`` counts it."""
        return Health(status_of(self.status) or "critical", self.output)


def read(client: ConsulClient, path: str) -> list[Check]:
    """The checks ``path`` lists; the client's error when the answer is not a clean
    list of checks, or when ACLs hid some of them (never "no checks")."""
    checks, response = client.read_as(path, list[Check])
    if response.filtered:
        raise client.error(
            f"Consul's ACLs hide checks of {path} from this token ({FILTERED_BY_ACLS}: "
            "true); grant it node:read and service:read on them"
        )
    return checks


def instances(checks: list[Check]) -> dict[str, Health]:
    """Each instance's health (``node/service id``, case-folded): its worst check,
    named with its output."""
    found: dict[str, list[Health]] = {}
    for check in checks:
        said = " ".join(check.output.split())[:200]
        health = Health(
            check.health.status,
            f"consul: check {check.name!r} {check.status}" + (f": {said}" if said else ""),
        )
        found.setdefault(f"{check.node}/{check.service_id}".casefold(), []).append(health)
    return {ref: worst(*healths) for ref, healths in found.items()}
