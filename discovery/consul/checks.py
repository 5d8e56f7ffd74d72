"""Consul's health checks as capsync reads them: a clean answer only, each check of the
documented shape, and an instance's health the worst of its checks (as ``?passing``
judges it)."""

from __future__ import annotations

from dataclasses import dataclass

from discovery.consul.client import FILTERED_BY_ACLS, ConsulClient
from discovery.health import Health, status_of, worst

_FIELDS = ("Node", "CheckID", "Name", "ServiceID", "Status", "Output")


@dataclass(frozen=True)
class Check:
    node: str
    check_id: str
    name: str
    service_id: str
    status: str
    output: str

    @property
    def health(self) -> Health:
        """As written: a status Consul has but capsync does not write (``maintenance``)
        is critical, as ``?passing`` counts it."""
        return Health(status_of(self.status) or "critical", self.output)


def read(client: ConsulClient, path: str) -> list[Check]:
    """The checks ``path`` lists; the client's error when the answer is not a clean
    list of checks, or when ACLs hid some of them (never "no checks")."""
    response = client.read_response(path, list)
    if response.filtered:
        raise client.error(
            f"Consul's ACLs hide checks of {path} from this token ({FILTERED_BY_ACLS}: "
            "true); grant it node:read and service:read on them"
        )
    checks = []
    for item in response.body:
        fields = [item.get(name) for name in _FIELDS] if isinstance(item, dict) else []
        texts = [field for field in fields if isinstance(field, str)]
        if len(texts) != len(_FIELDS):
            raise client.error(
                f"Consul answered GET {path} with a check of the wrong shape "
                f"({', '.join(_FIELDS)} must be strings)"
            )
        checks.append(Check(*texts))
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
