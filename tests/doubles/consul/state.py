"""The double's state store: catalog, KV and sessions behind one raft-like index.

Like Consul's memdb store, every write is applied at the next raft index and stamps the
table indexes it actually changed; an identical write consumes a raft index but moves no
table index, so blocking readers do not wake for it. Writes run on a copy of the tables
(records are immutable, so copies are shallow) and commit only if they succeed, which gives
/v1/txn its all-or-nothing behaviour. Error texts are those of agent/consul/state.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TypeVar

from .records import Check, KVEntry, Node, Service, Session
from .validation import meta_error

T = TypeVar("T")

MAX_LOCK_DELAY_NS = 60_000_000_000  # structs.MaxLockDelay
SESSION_TTL_MULTIPLIER = 2  # structs.SessionTTLMultiplier
EXTINCTION = "service_last_removed"


class FSMError(Exception):
    """The state store refused a write; the message is Consul's error text."""


def _fold(text: str) -> str:
    return text.casefold()


@dataclass
class Tables:
    nodes: dict[str, Node] = field(default_factory=dict)
    services: dict[tuple[str, str], Service] = field(default_factory=dict)
    checks: dict[tuple[str, str], Check] = field(default_factory=dict)
    kvs: dict[str, KVEntry] = field(default_factory=dict)
    tombstones: dict[str, int] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    index: dict[str, int] = field(default_factory=dict)

    def copy(self) -> Tables:
        return Tables(*(dict(getattr(self, name)) for name in self.__dataclass_fields__))

    def max_index(self, *names: str) -> int:
        return max(self.index.get(name, 0) for name in names)

    def node(self, name: str) -> Node | None:
        return self.nodes.get(_fold(name))

    def services_on(self, node: str) -> list[Service]:
        folded = _fold(node)
        found = [s for (n, _), s in self.services.items() if n == folded]
        return sorted(found, key=lambda s: _fold(s.id))

    def instances(self, name: str) -> list[Service]:
        """Instances of a service, by node then ID, as memdb's service index yields them."""
        folded = _fold(name)
        found = [s for s in self.services.values() if _fold(s.name) == folded]
        return sorted(found, key=lambda s: (_fold(s.node), _fold(s.id)))

    def service_index(self, name: str, exists: bool) -> int:
        """maxIndexForService: the service's own index, else the extinction index."""
        if not exists and EXTINCTION in self.index:
            return self.index[EXTINCTION]
        own = self.index.get("service." + _fold(name))
        return own if own is not None else self.max_index("nodes", "services")


class Tx:
    """One write in progress: a private copy of the tables and the index it commits at."""

    def __init__(self, tables: Tables, idx: int, now: float) -> None:
        self.t = tables
        self.idx = idx
        self.now = now
        self.lock_delays: dict[str, float] = {}
        self.started_sessions: dict[str, int] = {}
        self.ended_sessions: set[str] = set()

    def bump(self, *names: str) -> None:
        for name in names:
            self.t.index[name] = self.idx

    # -- nodes --------------------------------------------------------------------------
    def ensure_node(self, node: Node) -> Node:
        """ensureNodeTxn: create or update by name; an identical node writes nothing."""
        existing = self.t.node(node.name)
        if existing is not None and existing.same(node):
            return existing
        create = existing.create_index if existing else self.idx
        stored = replace(node, create_index=create, modify_index=self.idx)
        self.t.nodes[_fold(node.name)] = stored
        self.bump("nodes")
        for svc in self.t.services_on(node.name):
            self.bump("service." + _fold(svc.name))
        return stored

    def delete_node(self, name: str) -> None:
        """deleteNodeTxn: the node with its services, checks and sessions; missing is a no-op."""
        node = self.t.node(name)
        if node is None:
            return
        for svc in self.t.services_on(name):
            self.delete_service(name, svc.id)
        for key in [k for k in self.t.checks if k[0] == _fold(name)]:
            self.delete_check(name, self.t.checks[key].check_id)
        for sess in [s for s in self.t.sessions.values() if _fold(s.node) == _fold(name)]:
            self.destroy_session(sess.id)
        del self.t.nodes[_fold(name)]
        self.bump("nodes")

    # -- services -----------------------------------------------------------------------
    def ensure_service(self, node: str, svc: Service) -> Service:
        """ensureServiceTxn: meta validated, node required, identical re-writes skipped."""
        key = (_fold(node), _fold(svc.id))
        existing = self.t.services.get(key)
        reason = meta_error(svc.meta)
        if reason:
            raise FSMError(f"Invalid Service Meta for node {node} and serviceID {svc.id}: {reason}")
        if self.t.node(node) is None:
            raise FSMError("Missing node registration")
        if existing is not None and existing.same(svc):
            return existing
        create = existing.create_index if existing else self.idx
        stored = replace(svc, node=node, create_index=create, modify_index=self.idx)
        self.t.services[key] = stored
        self.bump("services", "service." + _fold(svc.name))
        if existing is not None and _fold(existing.name) != _fold(svc.name):
            self._after_removal(existing.name)
        return stored

    def delete_service(self, node: str, service_id: str) -> None:
        """deleteServiceTxn: the service and its checks; a missing one is a no-op."""
        key = (_fold(node), _fold(service_id))
        svc = self.t.services.get(key)
        if svc is None:
            return
        for check in [c for c in self.t.checks.values() if _fold(c.node) == key[0]]:
            if _fold(check.service_id) == key[1]:
                self.delete_check(node, check.check_id)
        del self.t.services[key]
        self.bump("services")
        self._after_removal(svc.name)

    def _after_removal(self, name: str) -> None:
        if self.t.instances(name):
            self.bump("service." + _fold(name))
        else:
            self.t.index.pop("service." + _fold(name), None)
            self.bump(EXTINCTION)

    def _touch_services_of(self, check: Check) -> None:
        if check.service_id:
            svc = self.t.services.get((_fold(check.node), _fold(check.service_id)))
            if svc is not None:
                self.bump("service." + _fold(svc.name))
            return
        for svc in self.t.services_on(check.node):
            self.bump("service." + _fold(svc.name))

    # -- checks -------------------------------------------------------------------------
    def ensure_check(self, check: Check) -> Check:
        """ensureCheckTxn: node (and service) must exist; critical checks end sessions."""
        key = (_fold(check.node), _fold(check.check_id))
        if self.t.node(check.node) is None:
            raise FSMError("Missing node registration")
        if check.service_id:
            svc = self.t.services.get((key[0], _fold(check.service_id)))
            if svc is None:
                raise FSMError("Missing service registration")
            check = replace(check, service_name=svc.name, service_tags=svc.tags)
        existing = self.t.checks.get(key)
        if existing is not None and existing.same(check):
            return existing
        create = existing.create_index if existing else self.idx
        stored = replace(check, create_index=create, modify_index=self.idx)
        self.t.checks[key] = stored
        self.bump("checks")
        self._touch_services_of(stored)
        if stored.status == "critical":
            self._end_sessions_using(stored)
        return stored

    def delete_check(self, node: str, check_id: str) -> None:
        key = (_fold(node), _fold(check_id))
        check = self.t.checks.pop(key, None)
        if check is None:
            return
        self.bump("checks")
        self._touch_services_of(check)
        self._end_sessions_using(check)

    def _end_sessions_using(self, check: Check) -> None:
        for sess in list(self.t.sessions.values()):
            ids = {_fold(cid) for cid, _ in sess.check_ids()}
            if _fold(sess.node) == _fold(check.node) and _fold(check.check_id) in ids:
                self.destroy_session(sess.id)

    # -- sessions -----------------------------------------------------------------------
    def create_session(self, sess: Session, ttl_ns: int) -> None:
        """sessionCreateTxn: the node and every check must exist, no check critical."""
        if self.t.node(sess.node) is None:
            raise FSMError("Missing node registration")
        for check_id, _ in sess.check_ids():
            check = self.t.checks.get((_fold(sess.node), _fold(check_id)))
            if check is None:
                raise FSMError(f"Missing check '{check_id}' registration")
            if check.status == "critical":
                raise FSMError(f"Check '{check_id}' is in critical state")
        self.t.sessions[sess.id] = replace(sess, create_index=self.idx, modify_index=self.idx)
        self.bump("sessions")
        if ttl_ns:
            self.started_sessions[sess.id] = ttl_ns

    def destroy_session(self, session_id: str) -> None:
        """deleteSessionTxn: release or delete the held keys and start their lock-delay."""
        sess = self.t.sessions.pop(session_id, None)
        if sess is None:
            return
        self.bump("sessions")
        self.ended_sessions.add(session_id)
        delay = min(sess.lock_delay, MAX_LOCK_DELAY_NS)
        for entry in [e for e in self.t.kvs.values() if e.session == session_id]:
            if sess.behavior == "delete":
                self.delete_key(entry.key)
            else:
                self.set_key(replace(entry, session=""), update_session=True)
            if delay > 0:
                self.lock_delays[entry.key] = self.now + delay / 1e9

    # -- KV primitives ------------------------------------------------------------------
    def set_key(self, entry: KVEntry, *, update_session: bool) -> KVEntry:
        """kvsSetTxn: keeps CreateIndex; an unchanged entry is not rewritten."""
        existing = self.t.kvs.get(entry.key)
        if not update_session:
            entry = replace(entry, session=existing.session if existing else "")
        create = existing.create_index if existing else self.idx
        if existing is not None and existing.same(entry):
            return replace(entry, create_index=create, modify_index=existing.modify_index)
        stored = replace(entry, create_index=create, modify_index=self.idx)
        self.t.kvs[entry.key] = stored
        self.bump("kvs")
        return stored

    def delete_key(self, key: str) -> None:
        """kvsDeleteTxn: a tombstone keeps the key's index visible to blocking readers."""
        if self.t.kvs.pop(key, None) is None:
            return
        self.t.tombstones[key] = self.idx
        self.bump("kvs", "tombstones")


class Store:
    """Tables plus the lock, condition and timers shared by every request thread."""

    def __init__(self, datacenter: str, node_name: str) -> None:
        self.datacenter = datacenter
        self.node_name = node_name
        self.node_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, node_name))
        self.clock: Callable[[], float] = time.monotonic
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.tables = Tables()
        self.raft_index = 1  # raft's first entry is the cluster configuration
        self.lock_delays: dict[str, float] = {}
        self.session_deadlines: dict[str, float] = {}
        self.session_ttls: dict[str, int] = {}
        self.closed = False
        self.write(self._bootstrap)

    def _bootstrap(self, tx: Tx) -> None:
        """The agent's own node, as a dev agent registers it: serfHealth and `consul`."""
        address = "127.0.0.1"
        tagged = {k: address for k in ("lan", "lan_ipv4", "wan", "wan_ipv4")}
        meta = {"consul-network-segment": "", "consul-version": "1.21.0"}
        tx.ensure_node(Node(self.node_id, self.node_name, address, self.datacenter, tagged, meta))
        tx.ensure_service(
            self.node_name,
            Service(self.node_name, "consul", "consul", tags=[], port=8300, meta={}),
        )
        tx.ensure_check(
            Check(
                self.node_name,
                "serfHealth",
                name="Serf Health Status",
                status="passing",
                output="Agent alive and reachable",
            )
        )

    def write(self, apply: Callable[[Tx], T]) -> T:
        """Apply one raft entry; the tables change only if `apply` returns normally."""
        with self.lock:
            self.raft_index += 1
            tx = Tx(self.tables.copy(), self.raft_index, self.clock())
            result = apply(tx)
            self.tables = tx.t
            self.lock_delays.update(tx.lock_delays)
            for sid in tx.ended_sessions:
                self.session_deadlines.pop(sid, None)
                self.session_ttls.pop(sid, None)
            for sid, ttl_ns in tx.started_sessions.items():
                self.session_ttls[sid] = ttl_ns
                self.renew(sid)
            self.cond.notify_all()
            return result

    def renew(self, session_id: str) -> None:
        """Reset the server-side timer: a session lives 2 x TTL after its last renewal."""
        with self.lock:
            ttl_ns = self.session_ttls.get(session_id)
            if ttl_ns:
                deadline = self.clock() + SESSION_TTL_MULTIPLIER * ttl_ns / 1e9
                self.session_deadlines[session_id] = deadline
                self.cond.notify_all()

    def lock_delayed(self, key: str) -> bool:
        with self.lock:
            return self.lock_delays.get(key, 0.0) > self.clock()

    def reap_expired(self) -> list[str]:
        """Invalidate every session whose timer ran out; returns their IDs."""
        with self.lock:
            now = self.clock()
            due = sorted(sid for sid, end in self.session_deadlines.items() if end <= now)
            for sid in due:  # one raft entry each, as each timer fires on its own
                self.write(partial(Tx.destroy_session, session_id=sid))
            return due

    def run_reaper(self) -> None:
        """Session timer loop; also woken by every commit so a changed clock is noticed."""
        with self.lock:
            while not self.closed:
                self.reap_expired()
                pending = [end - self.clock() for end in self.session_deadlines.values()]
                self.cond.wait(timeout=min([1.0, *pending]) if pending else 1.0)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.cond.notify_all()
