"""The Consul registry: capsync's own synthetic catalogue node, written through /v1/txn.

Reads are one request (``/v1/catalog/node-services/<node>``). Writes go in transactions of
at most ``max_ops`` operations (64 up to Consul 1.13, 128 from 1.14), the node's own
registration first when it is missing. A transaction Consul rolls back (409) names its
failing operations: those are reported as refused and the rest are sent again, so one bad
entry never holds back the others.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Literal
from urllib.parse import quote

from config.errors import RegistryError
from config.settings import KindName, RegistrySettingsBase
from daemon.plan import Changes
from daemon.query import Query
from daemon.registry.base import ApplyResult, Listed, Refused, Snapshot
from discovery import codec
from discovery.codec import Entry
from discovery.consul_client import ConsulClient
from discovery.consul_fields import entry_from_service, service_fields
from discovery.kinds import BuildContext, Kind, no_arg

ACL_DENIALS = ("Permission denied", "ACL not found")


class ConsulRegistry:
    def __init__(
        self,
        client: ConsulClient,
        *,
        service: str,
        owner: str,
        node: str,
        node_address: str = "127.0.0.1",
        max_ops: int = 64,
    ) -> None:
        self.client = client
        self.service = service
        self.owner = owner
        self.node = node
        self.node_address = node_address
        self.max_ops = max_ops
        self._node_registered = False

    def snapshot(self) -> Snapshot:
        body = self.client.get(f"/v1/catalog/node-services/{quote(self.node)}").body or {}
        node = body.get("Node")
        self._node_registered = node is not None
        if node is not None and (node.get("Meta") or {}).get(codec.OWNER) != self.owner:
            raise RegistryError(
                f"node {self.node!r} exists in Consul but is not capsync's node for owner "
                f"{self.owner!r} (its meta: {node.get('Meta')}); refusing to write to it. "
                "Choose another registry.node or owner."
            )
        owned: dict[str, Entry] = {}
        foreign: set[str] = set()
        for service in body.get("Services") or ():
            entry = entry_from_service(service)
            if entry.owner == self.owner:
                owned[entry.id] = entry
            else:
                foreign.add(entry.id)
        return Snapshot(owned=owned, foreign=frozenset(foreign))

    def apply(self, changes: Changes, stop: threading.Event | None = None) -> ApplyResult:
        ops = [
            *((e.id, self._service_op("set", e)) for e in changes.create),
            *((u.new.id, self._service_op("set", u.new)) for u in changes.update),
            *((e.id, self._service_op("delete", e)) for e in changes.delete),
        ]
        if not ops:
            return ApplyResult()
        if not self._node_registered:
            ops.insert(0, (self.node, self._node_op()))
        requests = applied = 0
        refused: list[Refused] = []
        for batch in _batches(ops, self.max_ops):
            if stop is not None and stop.is_set():
                break
            sent, landed, rejected = self._send(batch)
            requests, applied = requests + sent, applied + landed
            refused += rejected
        self._node_registered = True
        return ApplyResult(requests=requests, applied=applied, refused=tuple(refused))

    def entries(self, query: Query | None = None) -> list[Listed]:
        expression = (query or Query()).consul_filter()
        response = self.client.get(
            f"/v1/catalog/service/{quote(self.service)}", params={"filter": expression}
        )
        return [Listed(item["Node"], entry_from_service(item)) for item in response.body or ()]

    def close(self) -> None:
        self.client.close()

    def _send(self, batch: list[tuple[str, dict[str, Any]]]) -> tuple[int, int, list[Refused]]:
        """Send one transaction; on 409 drop the ops Consul named and send the rest."""
        requests = 0
        refused: list[Refused] = []
        while batch:
            response = self.client.put("/v1/txn", [op for _, op in batch])
            requests += 1
            if response.status == 200:
                return requests, len(batch), refused
            if response.status != 409:
                raise RegistryError(
                    f"Consul rejected a transaction ({response.status}): {response.text.strip()}"
                )
            errors = (response.body or {}).get("Errors") or []
            failing = {err["OpIndex"]: err["What"] for err in errors}
            denied = [what for what in failing.values() if what.startswith(ACL_DENIALS)]
            if denied:
                # The token, not an entry, is at fault: one clear cycle error.
                raise RegistryError(f"Consul refused the write: {denied[0]}; check the ACL "
                                    f"token's policy (node {self.node!r} and service "
                                    f"{self.service!r} need write)")
            if not failing:
                raise RegistryError(f"Consul rolled back a transaction without saying why: "
                                    f"{response.text.strip()}")
            refused += [Refused(batch[i][0], what) for i, what in sorted(failing.items())]
            batch = [item for i, item in enumerate(batch) if i not in failing]
        return requests, 0, refused

    def _service_op(self, verb: str, entry: Entry) -> dict[str, Any]:
        # A delete names the service too: Consul validates (and ACL-checks
        # service:write on) the name of every Service op, deletes included.
        service = (
            service_fields(entry) if verb == "set" else {"ID": entry.id, "Service": entry.service}
        )
        return {"Service": {"Verb": verb, "Node": self.node, "Service": service}}

    def _node_op(self) -> dict[str, Any]:
        return {
            "Node": {
                "Verb": "set",
                "Node": {
                    "Node": self.node,
                    "Address": self.node_address,
                    "Meta": {
                        "external-node": "true",
                        codec.EXTERNAL_SOURCE: "capsync",
                        codec.OWNER: self.owner,
                    },
                },
            }
        }


def _batches(
    ops: list[tuple[str, dict[str, Any]]], size: int
) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    for start in range(0, len(ops), size):
        yield ops[start : start + size]


class ConsulRegistrySettings(RegistrySettingsBase):
    """The Consul catalogue, reached through the top-level [consul] connection."""

    backend: Literal["consul"]
    name: KindName = "consul"


def build(settings: ConsulRegistrySettings, ctx: BuildContext) -> ConsulRegistry:
    return ConsulRegistry(
        ConsulClient(ctx.consul_endpoint()), service=settings.service, owner=settings.owner,
        node=settings.node_name, node_address=settings.node_address,
        max_ops=ctx.consul.max_txn_ops,
    )


KIND = Kind("consul", ConsulRegistrySettings, "", no_arg, build)
