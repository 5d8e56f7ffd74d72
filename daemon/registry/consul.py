"""The Consul registry: capsync's own synthetic catalogue node, written through /v1/txn.

Reads are one request (``/v1/catalog/node-services/<node>``), accepted only as a clean
answer. Writes go in transactions of at most ``max_ops`` operations (64 up to Consul
1.13, 128 from 1.14) and ``max_bytes`` of body (Consul's ``txn_max_req_len``, 512 KiB by
default); the node's registration (its meta names the writer) rides in the first
transaction whenever it must change. A transaction Consul rolls back (409) names its
failing operations: those entries are reported as refused and the rest are sent again;
a transaction that fails as a whole is reported and the next one is sent all the same.

An entry with a full-form document (``discovery.full_entry``) has it written as a KV
key in the same transaction as its service, and deleted with it: the ops of one entry
(its service, its document, and on a case-only rename the old id's delete) are a unit
that is counted in both limits, never split across transactions nor half refused. A
unit too big for any transaction is refused alone.

A case-only rename of an id is a delete and a set in the same transaction, so a reader
never sees the worker missing (Consul's service ids compare case-insensitively).

Each entry has one capsync check (``capsync:<service id>``, bound to its service) set in
the same transaction as the service, so ``/v1/health/service/<name>?passing``, DNS and
consul-template's ``service "name|passing"`` answer live workers only. Consul never runs
a catalog check: its status is what capsync writes, only when it changes (a health
operation is that one check op); deleting the service deletes its check with it. The
checks are read back with one ``/v1/health/node/<node>`` per snapshot.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any, Literal
from urllib.parse import quote

import msgspec

from config.errors import RegistryError
from config.events import emit
from config.settings import KindName, RegistrySettingsBase
from daemon.plan import Changes
from daemon.query import Query
from daemon.registry.base import (
    ApplyResult,
    KeptRead,
    Listed,
    Operation,
    Refused,
    Snapshot,
    Tally,
    operations,
)
from daemon.registry.ownership import Ownership
from daemon.registry.writer import claim
from discovery import codec
from discovery.codec import Entry
from discovery.consul import checks
from discovery.consul.client import FILTERED_BY_ACLS, ConsulClient, Response, encode
from discovery.consul.fields import NodeServices, entry_from_service, service_fields
from discovery.full_entry import document_key, document_prefix
from discovery.health import PASSING, UNKNOWN, Health, changed, status_of
from discovery.kinds import BuildContext, Kind, no_arg

ACL_DENIALS = ("Permission denied", "ACL not found")
# Filters no service and no check match: the node-services answer then carries only the
# node and the index, the node's checks only the index (a steady cycle's cheap reads).
NO_SERVICE = 'ID == "" and ID != ""'
NO_CHECK = 'CheckID == "" and CheckID != ""'

MAX_TXN_BYTES = 512 * 1024
CHECK_PREFIX = "capsync:"
CHECK_NAME = "capsync health"
MAX_OUTPUT = 4096  # Consul's default check_output_max_size, in bytes
NODE = -1  # the node's registration, in a 409's failing operations

Txn = list[dict[str, Any]]  # one entry's ops, sent together
_TAKEN = (
    "another writer registered an instance with this id on capsync's node since the "
    "snapshot; left as it is"
)


class ConsulRegistry:
    def __init__(
        self,
        client: ConsulClient,
        ownership: Ownership,
        *,
        node_address: str = "127.0.0.1",
        max_ops: int = 64,
        max_bytes: int = MAX_TXN_BYTES,
    ) -> None:
        self.client = client
        self.ownership = ownership
        self.node_address = node_address
        self.max_ops = max_ops
        self.max_bytes = max_bytes
        self._node_meta: dict[str, str] | None = None
        self._node_seen = False
        self._node_read = False  # the node's claim is known only after a snapshot
        self._meta_read: dict[str, str] | None = None
        self._node_index = 0  # the node's ModifyIndex as read: its meta is written by CAS
        # The last full read, at the X-Consul-Index of the node's services and of its
        # checks.
        self._kept = KeptRead()
        # What a full read may hold instead of what it decoded, when equal in full: the
        # last read's entries (after the plan, the desired objects: registry_sync._share)
        # and those written since. A read of an unchanged fleet then frees each decoded
        # entry as soon as it is made, instead of holding a second copy of every one.
        self._last_owned: Mapping[str, Entry] = {}
        self._written: dict[str, Entry] = {}

    def snapshot(self) -> Snapshot:
        """The node's services and their checks. The same Snapshot object as last time
        when Consul's indexes for them have not moved since that read (no write of any
        node, service or check, ours or anyone's), asked in two requests whose answers
        hold nothing; a full read at least every ``REREAD_SECONDS`` whatever they say."""
        if self._kept.fresh() and (kept := self._kept.get(self._index_now())) is not None:
            return kept
        path = self._path()
        started = self._kept.start()
        # Asked before the checks are read: a check changed in between moves it, so the
        # next cycle reads everything again.
        checked = self._checks_index()
        answer, response = self.client.read_as(path, NodeServices)
        snapshot = self._snapshot(answer, response, path)
        self._kept.keep((response.index, checked), started, snapshot)
        return snapshot

    def _path(self) -> str:
        return f"/v1/catalog/node-services/{quote(self.ownership.node)}"

    def _index_now(self) -> tuple[int, int] | None:
        """The indexes of the node's services and checks now (None: a full read must
        tell), from answers filtered to no service and no check at all."""
        response = self.client.read_response(self._path(), dict, params={"filter": NO_SERVICE})
        if response.filtered or not isinstance(response.body.get("Node"), dict):
            return None
        return response.index, self._checks_index()

    def _checks_index(self) -> int:
        return self.client.read_response(
            self._checks_path(), list, params={"filter": NO_CHECK}
        ).index

    def _snapshot(self, answer: NodeServices, response: Response, path: str) -> Snapshot:
        node, services = answer.node, answer.services
        if response.filtered:
            # Consul's own word (1.11 and later) that the token may not see all of it: a
            # partial answer is never read as the node's content.
            raise RegistryError(
                f"Consul's ACLs hide node {self.ownership.node!r} or some of its services from "
                f"this token ({FILTERED_BY_ACLS}: true); grant it node:read on the node and "
                "service:read on the services"
            )
        if node is None and answer.raw_services:
            raise RegistryError(f"Consul answered GET {path} with services but no Node")
        if node is None and self._node_seen:
            emit(
                logging.WARNING,
                "registry_node_vanished",
                registry=self.ownership.name,
                node=self.ownership.node,
                action="registering it again, with its entries",
            )
        self._node_seen = node is not None
        self._meta_read = None if node is None else node.meta or {}
        self._node_index = 0 if node is None else node.modify_index
        self._node_meta = self._claim()
        self._node_read = True
        ours: list[Entry] = []
        foreign: set[str] = set()
        known, self._written = {**self._last_owned, **self._written}, {}
        try:
            for service in services():
                if self.ownership.ours(service.owner, service.service):
                    ours.append(_known(service.entry(), known))
                else:
                    foreign.add(service.id.casefold())
        except msgspec.ValidationError as exc:
            raise self.client.error(
                f"Consul answered GET {path} with JSON of the wrong shape: {exc}"
            ) from None
        health = self._checks() if ours else {}
        owned = {}
        for entry in ours:
            read = _as_written(health.get(check_id(entry.id).casefold(), UNKNOWN), entry)
            owned[entry.id] = entry if entry.health == read else replace(entry, health=read)
        self._last_owned = owned
        return Snapshot(owned=owned, foreign=frozenset(foreign), meta=self._meta_read, health=True)

    def _checks(self) -> dict[str, Health]:
        """capsync's checks on its node: case-folded check id -> health; a status
        capsync never writes (set by hand) reads UNKNOWN, so it is written again."""
        return {
            check.check_id.casefold(): check.health if status_of(check.status) else UNKNOWN
            for check in checks.read(self.client, self._checks_path())
        }

    def _checks_path(self) -> str:
        return f"/v1/health/node/{quote(self.ownership.node)}"

    def _claim(self, record: Mapping[str, str] | None = None) -> dict[str, str] | None:
        return claim(self._meta_read, self.ownership, record=record)

    def apply(self, changes: Changes, stop: threading.Event | None = None) -> ApplyResult:
        tally = Tally()
        ops = self._writable(operations(changes), tally)
        if not ops:
            return tally.result()
        self._kept.forget()  # whatever this writes, the next snapshot reads it all
        written = [*changes.create, *(u.new for u in (*changes.update, *changes.health))]
        self._written.update((entry.id, entry) for entry in written)
        if not self._node_read:
            self.snapshot()  # who holds the node is checked before any write
        if changes.record:
            self._node_meta = self._claim(changes.record)
        for batch in self._batches(ops, tally):
            if stop is not None and stop.is_set():
                tally.unsent += len(batch)
                continue
            node = [self._node_op(self._node_meta)] if self._node_meta is not None else []
            self._send(batch, node, tally)
        return tally.result()

    @staticmethod
    def _writable(ops: list[Operation], tally: Tally) -> list[Operation]:
        """The operations Consul can take; an entry that breaks Consul's meta rules only
        (a dotted metadata key, a value over 512 bytes, over 64 pairs) is refused here
        alone, with the rule, and whatever this registry held for it stays."""
        out = []
        for op in ops:
            problems = codec.consul_problems(op.entry) if not op.removes else []
            if problems:
                tally.refuse([op], "; ".join(problems))
            else:
                out.append(op)
        return out

    def entries(self, query: Query | None = None) -> list[Listed]:
        expression = consul_filter(query or Query())
        path = f"/v1/catalog/service/{quote(self.ownership.service)}"
        items, _ = self.client.read(path, list, params={"filter": expression})
        listed = []
        for item in items:
            node = item.get("Node") if isinstance(item, dict) else None
            if not isinstance(node, str):
                raise RegistryError(
                    f"Consul answered GET {path} with an instance without a Node name"
                )
            listed.append(Listed(node, _entry(item, path)))
        listed = self._with_health(listed) if listed else listed
        if not any(codec.DOCUMENT in item.entry.meta for item in listed):
            return listed
        documents = self._documents()
        return [
            Listed(
                item.node,
                replace(
                    item.entry, document=documents.get(item.entry.meta.get(codec.DOCUMENT, ""), "")
                ),
            )
            for item in listed
        ]

    def _with_health(self, listed: list[Listed]) -> list[Listed]:
        """Each instance with its health as Consul's ``?passing`` judges it: the worst of
        its checks (none: passing), read with one more request."""
        path = f"/v1/health/checks/{quote(self.ownership.service)}"
        health = checks.instances(checks.read(self.client, path))
        return [
            Listed(item.node, replace(item.entry, health=found))
            if (found := health.get(f"{item.node}/{item.entry.id}".casefold()))
            else item
            for item in listed
        ]

    def _documents(self) -> dict[str, str]:
        """Every full-form document of the service, by key, in one read (a clean answer
        only: 404 with an index is Consul's empty prefix, anything else fails)."""
        prefix = document_prefix(self.ownership.service)
        path = f"/v1/kv/{quote(prefix)}"
        response = self.client.get(path, params={"recurse": ""})
        if response.status == 404 and response.index:
            return {}
        if response.status != 200 or not isinstance(response.body, list):
            raise RegistryError(
                f"Consul answered the read of {prefix} with "
                f"{response.status}: {response.text.strip()[:200]}"
            )
        try:
            return {
                item["Key"]: base64.b64decode(item.get("Value") or "").decode("utf-8")
                for item in response.body
            }
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise RegistryError(
                f"Consul answered GET {path} with a KV entry of the wrong "
                f"shape ({type(exc).__name__}: {exc})"
            ) from None

    def close(self) -> None:
        self.client.close()

    def _batches(
        self, writable: list[Operation], tally: Tally
    ) -> Iterator[list[tuple[Operation, Txn]]]:
        """Consecutive whole units within both limits, the node's registration counted
        in while it is still to be sent (the first transaction carries it; once one is
        applied, the node is held and the rest have room for one more entry); a unit
        that fits in no transaction is refused alone. Each unit's ops are built as its
        batch fills: a cold sync never holds every entry's body at once."""
        reserve, reserve_ops = self._reserve()
        batch: list[tuple[Operation, Txn]] = []
        ops = size = 0
        for op in writable:
            txn = self._txn(op)
            need = _size(txn) - 1  # its ops and one separating comma
            if len(txn) + reserve_ops > self.max_ops or need + reserve > self.max_bytes:
                tally.refuse(
                    [op],
                    f"{need} bytes ({len(txn)} operations) of transaction "
                    f"body alone; consul.max_txn_bytes allows "
                    f"{self.max_bytes} (Consul's txn_max_req_len) and "
                    f"consul.max_txn_ops {self.max_ops}",
                )
                continue
            if batch and (
                ops + len(txn) + reserve_ops > self.max_ops
                or size + need + reserve > self.max_bytes
            ):
                yield batch  # sent before this resumes: the node's op may be done with
                batch, ops, size = [], 0, 0
                reserve, reserve_ops = self._reserve()
            batch.append((op, txn))
            ops, size = ops + len(txn), size + need
        if batch:
            yield batch

    def _reserve(self) -> tuple[int, int]:
        """(bytes, ops) a transaction keeps for the node's registration: none once it
        is written (``_node_meta`` None), as ``apply`` then sends none."""
        if self._node_meta is None:
            return 2, 0  # the body's brackets
        return _size([self._node_op(self._node_meta)]), 1

    def _send(self, batch: list[tuple[Operation, Txn]], node: Txn, tally: Tally) -> None:
        """One transaction; on 409 drop the units Consul named and send the rest."""
        while batch:
            body = node + [item for _, txn in batch for item in txn]
            tally.requests += 1
            try:
                response = self.client.put("/v1/txn", body)
            except RegistryError as exc:
                tally.fail([op for op, _ in batch], str(exc))
                return
            if response.status == 200:
                self._node_meta = None
                tally.wrote([op for op, _ in batch])
                return
            failing = self._rolled_back(response, node, batch)
            if isinstance(failing, str):
                tally.refuse([op for op, _ in batch], failing)
                return
            for index, what in failing.items():
                op = batch[index][0]
                taken = op.action == "create" and "index is stale" in what
                tally.answered(
                    op,
                    Refused(op.entry.id, _TAKEN if taken else what, foreign=taken),
                )
            batch = [unit for i, unit in enumerate(batch) if i not in failing]

    def _rolled_back(
        self, response: Response, node: Txn, batch: list[tuple[Operation, Txn]]
    ) -> dict[int, str] | str:
        """What a transaction Consul did not apply says: the units it named, each with
        why (the rest may be sent again), or why the whole batch is refused. A denial of
        the token or a stale node is the cycle's error, raised."""
        if response.status != 409:
            return (
                f"Consul rejected the transaction ({response.status}): "
                f"{response.text.strip()[:300]}"
            )
        failing = _failing(response.body, node, batch)
        if failing is None:
            return (
                "Consul rolled back the transaction without saying why: "
                f"{response.text.strip()[:300]}"
            )
        denied = [what for what in failing.values() if what.startswith(ACL_DENIALS)]
        if denied:
            # The token, not an entry, is at fault: one clear cycle error.
            raise RegistryError(
                f"Consul refused the write: {denied[0]}; check the ACL "
                f"token's policy (node {self.ownership.node!r} and service "
                f"{self.ownership.service!r} need write)"
            )
        if NODE in failing and "index is stale" in failing[NODE]:
            # The node's meta (another service's writer claim or guard marks, shared on
            # this owner's node) changed since it was read: never write back what was
            # read over it. The next cycle reads it again.
            self._node_read = False
            raise RegistryError(
                f"node {self.ownership.node!r} changed since it was read (another writer "
                "of its meta); nothing was written, the next cycle reads it again"
            )
        if NODE in failing:
            return f"capsync's node registration was refused: {failing[NODE]}"
        return failing

    def _txn(self, op: Operation) -> Txn:
        """One entry's ops: its service, its check (when new or its status changed), its
        document, and on a case-only rename the delete of the old id (which deletes the
        old id's check with it). A health operation is the check alone."""
        if op.removes:
            return [self._service_op("delete", op.entry), *self._document_ops(None, op.entry)]
        if op.action == "health":
            return [self._check_op(op.entry)]
        renamed = op.old is not None and op.old.id != op.entry.id
        checked = op.old is None or renamed or changed(op.old.health, op.entry.health)
        # A create is a check-and-set on "absent" (ModifyIndex 0): an instance another
        # writer registered since the snapshot is a conflict, never overwritten.
        verb = "cas" if op.action == "create" else "set"
        return [
            *([self._service_op("delete", op.old)] if renamed and op.old else []),
            self._service_op(verb, op.entry),
            *([self._check_op(op.entry)] if checked else []),
            *self._document_ops(op.entry, op.old),
        ]

    def _check_op(self, entry: Entry) -> dict[str, Any]:
        """The entry's capsync check, bound to its service (its name is sent so Consul
        checks service:write on it, as it does for the service op)."""
        health = entry.health
        output = health.output or _default_output(entry.source, health.status)
        raw = output.encode("utf-8", "backslashreplace")[:MAX_OUTPUT]
        check = {
            "Node": self.ownership.node,
            "CheckID": check_id(entry.id),
            "Name": CHECK_NAME,
            "Status": health.status,
            "Output": raw.decode("utf-8", "ignore"),
            "ServiceID": entry.id,
            "ServiceName": entry.service,
        }
        return {"Check": {"Verb": "set", "Check": check}}

    def _document_ops(self, new: Entry | None, old: Entry | None) -> Txn:
        """Write the new entry's document; delete the old one's when the new has none or
        keeps it elsewhere. The old key is derived, never taken from meta, so only this
        owner's documents are ever deleted, and without a read."""
        ops = []
        new_key = new.meta.get(codec.DOCUMENT, "") if new else ""
        old_key = (
            document_key(self.ownership.owner, old.service, old.id)
            if old is not None and codec.DOCUMENT in old.meta
            else ""
        )
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
            {"ID": entry.id, "Service": entry.service}
            if verb == "delete"
            else service_fields(entry) | ({"ModifyIndex": 0} if verb == "cas" else {})
        )
        return {"Service": {"Verb": verb, "Node": self.ownership.node, "Service": service}}

    def _node_op(self, meta: dict[str, str] | None) -> dict[str, Any]:
        """The node with its meta, as a check-and-set on the ModifyIndex read with it (0:
        only if the node is still absent), so a read-modify-write never reverts a newer
        write of the meta."""
        return {
            "Node": {
                "Verb": "cas",
                "Node": {
                    "Node": self.ownership.node,
                    "Address": self.node_address,
                    "Meta": meta or {},
                    "ModifyIndex": self._node_index,
                },
            }
        }


def check_id(service_id: str) -> str:
    """The id of an entry's capsync check, derived from its service id (compared
    case-insensitively, as Consul compares check ids)."""
    return f"{CHECK_PREFIX}{service_id}"


def _default_output(source: str, status: str) -> str:
    """The check output capsync writes for a health that carries none."""
    return f"capsync: {source or 'declared'}, {status}"


def _known(entry: Entry, known: Mapping[str, Entry]) -> Entry:
    """The entry held before that is equal to ``entry`` in full but for its health
    (set after), or ``entry`` itself."""
    held = known.get(entry.id)
    if held is not None and held == entry and held.document == entry.document:
        return held
    return entry


def _as_written(health: Health, entry: Entry) -> Health:
    """A health read back as the entry that was written carries it: the output capsync
    filled in for an empty one reads empty again, so an unchanged entry read back is
    equal to the desired one in full (and the kept snapshot can hold that object)."""
    if health.output and health.output == _default_output(entry.source, health.status):
        return PASSING if health.status == PASSING.status else Health(health.status)
    return health


def _failing(body: Any, node: Txn, batch: list[tuple[Operation, Txn]]) -> dict[int, str] | None:
    """Consul's 409 errors as batch index (or NODE) -> reason; None when it named none."""
    errors = body.get("Errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors:
        return None
    owner_of: list[int] = [NODE] * len(node)
    for index, (_, txn) in enumerate(batch):
        owner_of += [index] * len(txn)
    failing: dict[int, str] = {}
    for error in errors:
        at = error.get("OpIndex") if isinstance(error, dict) else None
        if not isinstance(at, int) or not 0 <= at < len(owner_of):
            return None
        failing.setdefault(owner_of[at], str(error.get("What", "")))
    return failing


def _entry(service: Any, path: str) -> Entry:
    try:
        return entry_from_service(service)
    except ValueError as exc:
        raise RegistryError(
            f"Consul answered GET {path} with an instance of the wrong shape: {exc}"
        ) from None


def _size(txn: Txn) -> int:
    """Bytes of ``txn`` as a JSON array, exactly as the client encodes it."""
    return len(encode(txn))


class ConsulRegistrySettings(RegistrySettingsBase):
    """The Consul catalogue, reached through the top-level [consul] connection (its
    max_txn_ops and max_txn_bytes bound each transaction)."""

    backend: Literal["consul"]
    name: KindName = "consul"


def build(settings: ConsulRegistrySettings, ctx: BuildContext) -> ConsulRegistry:
    return ConsulRegistry(
        ConsulClient(ctx.consul_endpoint()),
        Ownership.of(settings, takeover=ctx.takeover),
        node_address=settings.node_address,
        max_ops=ctx.consul.max_txn_ops,
        max_bytes=ctx.consul.max_txn_bytes,
    )


def consul_filter(query: Query) -> str:
    """A go-bexpr expression selecting a superset of the matches (never fewer).

    A term whose value cannot be quoted in go-bexpr (it has no escapes: a value with
    both ``"`` and a backtick) is left out; ``matches`` still applies it exactly.
    """
    terms = ['ServiceMeta["external-source"] == "capsync"']
    tools = [f"{q} in ServiceTags" for t in query.tools if (q := _quote(t))]
    if tools and len(tools) == len(query.tools):
        terms.append("(" + " or ".join(tools) + ")")
    terms += [f"{q} in ServiceTags" for tool in query.has if (q := _quote(tool))]
    terms += [
        f'ServiceMeta[{q}] == "true"'
        for flag in query.flags
        if (q := _quote(codec.FLAG_PREFIX + flag))
    ]
    terms += [
        f"ServiceMeta[{k}] == {v}"
        for key, value in query.meta
        if (k := _quote(key)) and (v := _quote(value))
    ]
    # A minimal-form entry has no verified key (it is verified only without tools).
    if query.verified:
        terms.append(f'ServiceMeta["{codec.VERIFIED}"] != "false"')
    terms += [f"{q} in ServiceTags" for c, p in query.permissions if (q := _quote(f"perm:{c}:{p}"))]
    return " and ".join(terms)


def _quote(text: str) -> str:
    """A go-bexpr string literal: double quotes, else backticks, else "" (cannot: it has
    both, or a character go-bexpr's grammar does not take, such as a control character)."""
    if not text.isprintable():
        return ""
    if '"' not in text and "\\" not in text:
        return f'"{text}"'
    return f"`{text}`" if "`" not in text else ""


KIND = Kind("consul", ConsulRegistrySettings, "", no_arg, build)
