"""The Consul registry: capsync's own synthetic catalogue node, written through /v1/txn.

Reads are one request (``/v1/catalog/node-services/<node>``). Writes go in transactions of
at most ``max_ops`` operations (64 up to Consul 1.13, 128 from 1.14), the node's own
registration first when it is missing. A transaction Consul rolls back (409) names its
failing operations: those are reported as refused and the rest are sent again, so one bad
entry never holds back the others.

An entry with a full-form document (``discovery.full_entry``) has it written as a KV
key in the same transaction as its service, and deleted with it: the ops of one entry
are a unit that is never split across transactions nor half refused.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from dataclasses import replace
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
from discovery.full_entry import document_key, document_prefix
from discovery.kinds import BuildContext, Kind, no_arg

Unit = tuple[str, list[dict[str, Any]]]  # one entry's id and its ops, sent together

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
        ops: list[Unit] = [
            *((e.id, self._set_ops(e, None)) for e in changes.create),
            *((u.new.id, self._set_ops(u.new, u.old)) for u in changes.update),
            *((e.id, [self._service_op("delete", e), *self._document_ops(None, e)])
              for e in changes.delete),
        ]
        if not ops:
            return ApplyResult()
        if not self._node_registered:
            ops.insert(0, (self.node, [self._node_op()]))
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
        listed = [Listed(item["Node"], entry_from_service(item)) for item in response.body or ()]
        if not any(codec.DOCUMENT in item.entry.meta for item in listed):
            return listed
        documents = self._documents()
        return [
            Listed(item.node, replace(item.entry, document=documents.get(
                item.entry.meta.get(codec.DOCUMENT, ""), "")))
            for item in listed
        ]

    def _documents(self) -> dict[str, str]:
        """Every full-form document of the service, by key, in one read."""
        prefix = document_prefix(self.service)
        response = self.client.get(f"/v1/kv/{quote(prefix)}", params={"recurse": ""})
        if response.status == 404 and response.index:
            return {}
        if response.status != 200 or not isinstance(response.body, list):
            raise RegistryError(f"Consul answered the read of {prefix} with "
                                f"{response.status}: {response.text.strip()[:200]}")
        return {item["Key"]: base64.b64decode(item.get("Value") or "").decode("utf-8")
                for item in response.body}

    def close(self) -> None:
        self.client.close()

    def _send(self, batch: list[Unit]) -> tuple[int, int, list[Refused]]:
        """Send one transaction; on 409 drop the units Consul named and send the rest."""
        requests = 0
        refused: list[Refused] = []
        while batch:
            owners = [unit for unit, (_, unit_ops) in enumerate(batch) for _ in unit_ops]
            response = self.client.put("/v1/txn", [op for _, unit_ops in batch
                                                   for op in unit_ops])
            requests += 1
            if response.status == 200:
                return requests, len(batch), refused
            if response.status != 409:
                raise RegistryError(
                    f"Consul rejected a transaction ({response.status}): {response.text.strip()}"
                )
            errors = (response.body or {}).get("Errors") or []
            failing: dict[int, str] = {}
            for err in errors:
                failing.setdefault(owners[err["OpIndex"]], err["What"])
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

    def _set_ops(self, new: Entry, old: Entry | None) -> list[dict[str, Any]]:
        return [self._service_op("set", new), *self._document_ops(new, old)]

    def _document_ops(self, new: Entry | None, old: Entry | None) -> list[dict[str, Any]]:
        """Write the new entry's document; delete the old one's when the new has none or
        keeps it elsewhere. The old key is derived, never taken from meta, so only this
        owner's documents are ever deleted, and without a read."""
        ops = []
        new_key = new.meta.get(codec.DOCUMENT, "") if new else ""
        old_key = (document_key(self.owner, old.service, old.id)
                   if old is not None and codec.DOCUMENT in old.meta else "")
        if new is not None and new_key:
            value = base64.b64encode(new.document.encode("utf-8")).decode("ascii")
            ops.append({"KV": {"Verb": "set", "Key": new_key, "Value": value}})
        if old_key and old_key != new_key:
            ops.append({"KV": {"Verb": "delete", "Key": old_key}})
        return ops

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


def _batches(units: list[Unit], size: int) -> Iterator[list[Unit]]:
    """Whole units, at most ``size`` ops per transaction (a unit is at most 3 ops)."""
    batch: list[Unit] = []
    count = 0
    for unit in units:
        if batch and count + len(unit[1]) > size:
            yield batch
            batch, count = [], 0
        batch.append(unit)
        count += len(unit[1])
    if batch:
        yield batch


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
