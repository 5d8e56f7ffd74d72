"""Immutable catalog, KV and session records, and their JSON shapes.

Records are never mutated once stored (writes replace them), so a write can work on shallow
copies of the tables and be dropped whole when it fails. The JSON renderers follow the Go
structs Consul encodes (agent/structs: Node, NodeService, ServiceNode, HealthCheck, DirEntry,
Session), including which fields are omitted when empty.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

EMPTY_PROXY: dict[str, Any] = {"Mode": "", "MeshGateway": {}, "Expose": {}}


@dataclass(frozen=True)
class Node:
    id: str
    name: str
    address: str
    datacenter: str
    tagged_addresses: dict[str, str] | None
    meta: dict[str, str] | None
    create_index: int = 0
    modify_index: int = 0

    def same(self, other: Node) -> bool:
        """Node.IsSame: raft indexes aside; nil and empty maps differ (reflect.DeepEqual)."""
        return (
            self.id == other.id
            and self.name.casefold() == other.name.casefold()
            and self.address == other.address
            and self.datacenter == other.datacenter
            and self.tagged_addresses == other.tagged_addresses
            and (self.tagged_addresses is None) == (other.tagged_addresses is None)
            and self.meta == other.meta
            and (self.meta is None) == (other.meta is None)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Node": self.name,
            "Address": self.address,
            "Datacenter": self.datacenter,
            "TaggedAddresses": self.tagged_addresses,
            "Meta": self.meta,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


@dataclass(frozen=True)
class Service:
    node: str
    id: str
    name: str
    kind: str = ""
    tags: list[str] | None = None
    address: str = ""
    tagged_addresses: dict[str, Any] | None = None
    meta: dict[str, str] | None = None
    port: int = 0
    socket_path: str = ""
    weights: dict[str, int] = field(default_factory=lambda: {"Passing": 1, "Warning": 1})
    enable_tag_override: bool = False
    proxy: dict[str, Any] | None = None
    connect: dict[str, Any] | None = None
    locality: dict[str, Any] | None = None
    create_index: int = 0
    modify_index: int = 0

    def same(self, other: Service) -> bool:
        """NodeService.IsSame: every user-visible field, nil and empty told apart."""
        mine, theirs = self._comparable(), other._comparable()
        return mine == theirs

    def _comparable(self) -> tuple[Any, ...]:
        def typed(value: Any) -> tuple[bool, Any]:
            return value is None, value

        return (
            self.id,
            self.name,
            self.kind,
            typed(self.tags),
            self.address,
            typed(self.tagged_addresses),
            typed(self.meta),
            self.port,
            self.socket_path,
            self.weights,
            self.enable_tag_override,
            self.proxy or {},
            self.connect or {},
            self.locality,
        )

    def node_service_json(self, *, normalise: bool) -> dict[str, Any]:
        """structs.NodeService; the HTTP node endpoints turn nil Tags into `[]`, txn results
        carry them as stored."""
        tags = (self.tags or []) if normalise else self.tags
        out: dict[str, Any] = {}
        if self.kind:
            out["Kind"] = self.kind
        out.update(ID=self.id, Service=self.name, Tags=tags, Address=self.address)
        if self.tagged_addresses:
            out["TaggedAddresses"] = self.tagged_addresses
        out["Meta"] = self.meta
        if self.port:
            out["Port"] = self.port
        if self.socket_path:
            out["SocketPath"] = self.socket_path
        out.update(Weights=self.weights, EnableTagOverride=self.enable_tag_override)
        if self.locality:
            out["Locality"] = self.locality
        out.update(
            Proxy={**EMPTY_PROXY, **(self.proxy or {})},
            Connect=self.connect or {},
            PeerName="",
            CreateIndex=self.create_index,
            ModifyIndex=self.modify_index,
        )
        return out

    def service_node_json(self, node: Node) -> dict[str, Any]:
        """structs.ServiceNode: the service joined with its node (GET /v1/catalog/service)."""
        out: dict[str, Any] = {
            "ID": node.id,
            "Node": self.node,
            "Address": node.address,
            "Datacenter": node.datacenter,
            "TaggedAddresses": node.tagged_addresses,
            "NodeMeta": node.meta,
            "ServiceKind": self.kind,
            "ServiceID": self.id,
            "ServiceName": self.name,
            "ServiceTags": list(self.tags or []),
            "ServiceAddress": self.address,
        }
        if self.tagged_addresses:
            out["ServiceTaggedAddresses"] = self.tagged_addresses
        out.update(
            ServiceWeights=self.weights,
            ServiceMeta=dict(self.meta or {}),
            ServicePort=self.port,
            ServiceSocketPath=self.socket_path,
            ServiceEnableTagOverride=self.enable_tag_override,
            ServiceProxy={**EMPTY_PROXY, **(self.proxy or {})},
            ServiceConnect=self.connect or {},
            ServiceLocality=self.locality,
            CreateIndex=self.create_index,
            ModifyIndex=self.modify_index,
        )
        return out


@dataclass(frozen=True)
class Check:
    node: str
    check_id: str
    name: str = ""
    status: str = "critical"
    notes: str = ""
    output: str = ""
    service_id: str = ""
    service_name: str = ""
    service_tags: list[str] | None = None
    type: str = ""
    definition: dict[str, Any] | None = None
    create_index: int = 0
    modify_index: int = 0

    def same(self, other: Check) -> bool:
        strip = {"create_index": 0, "modify_index": 0}
        return {**vars(self), **strip} == {**vars(other), **strip}

    def to_json(self) -> dict[str, Any]:
        return {
            "Node": self.node,
            "CheckID": self.check_id,
            "Name": self.name,
            "Status": self.status,
            "Notes": self.notes,
            "Output": self.output,
            "ServiceID": self.service_id,
            "ServiceName": self.service_name,
            "ServiceTags": self.service_tags or [],
            "Type": self.type,
            "Interval": "",
            "Timeout": "",
            "ExposedPort": 0,
            "Definition": self.definition or {},
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


@dataclass(frozen=True)
class KVEntry:
    key: str
    value: bytes | None
    flags: int = 0
    session: str = ""
    lock_index: int = 0
    create_index: int = 0
    modify_index: int = 0

    def same(self, other: KVEntry) -> bool:
        """DirEntry.Equal: the stored fields, raft indexes aside."""
        return (self.key, self.value or b"", self.flags, self.session, self.lock_index) == (
            other.key,
            other.value or b"",
            other.flags,
            other.session,
            other.lock_index,
        )

    def to_json(self, *, with_value: bool = True) -> dict[str, Any]:
        value = self.value if with_value else None
        out: dict[str, Any] = {
            "LockIndex": self.lock_index,
            "Key": self.key,
            "Flags": self.flags,
            "Value": None if value is None else base64.b64encode(value).decode(),
        }
        if self.session:
            out["Session"] = self.session
        out.update(CreateIndex=self.create_index, ModifyIndex=self.modify_index)
        return out


@dataclass(frozen=True)
class Session:
    id: str
    node: str
    name: str = ""
    lock_delay: int = 15_000_000_000
    behavior: str = "release"
    ttl: str = ""
    node_checks: list[str] | None = None
    service_checks: list[dict[str, str]] | None = None
    create_index: int = 0
    modify_index: int = 0

    def check_ids(self) -> list[tuple[str, bool]]:
        """(check id, is a service check) pairs the session depends on."""
        ids = [(c, False) for c in self.node_checks or []]
        return ids + [(c.get("ID", ""), True) for c in self.service_checks or []]

    def to_json(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Name": self.name,
            "Node": self.node,
            "LockDelay": self.lock_delay,
            "Behavior": self.behavior,
            "TTL": self.ttl,
            "NodeChecks": self.node_checks,
            "ServiceChecks": self.service_checks,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }
