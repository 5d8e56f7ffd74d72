"""The double's object store: every served type behind one resourceVersion.

Like the API server over etcd, every write takes the next global resourceVersion and is
kept as a watch event; ``compact()`` forgets the history, so a watch or a continue token
from before it is answered with 410 Expired and the client has to list again.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .resources import NAMESPACES, STORED, TYPES

Key = tuple[str, str]  # (namespace, name); the namespace is "" for cluster-scoped objects
Requirement = tuple[str, str, frozenset[str]]
# Fields every type can be selected by (apimachinery's DefaultClusterScopedAttr and
# DefaultNamespaceScopedAttr); pods have more, which capsync does not use.
FIELDS = ("metadata.name", "metadata.namespace")


class Expired(Exception):
    """A resourceVersion or continue token older than the compacted history (410)."""


class BadRequest(Exception):
    """A query the API server would refuse with 400 (bad selector, bad token)."""


class Conflict(Exception):
    """A create of an object that exists (409 AlreadyExists)."""


@dataclass(frozen=True)
class Event:
    rv: int
    resource: str
    type: str
    obj: dict[str, Any]
    prev: dict[str, Any] | None = None  # the object before a MODIFIED or DELETED


# -- label selectors ---------------------------------------------------------------------

_SET_RE = re.compile(r"^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$")
_EQ_RE = re.compile(r"^([\w./-]+)\s*(==|=|!=)\s*([\w.-]*)$")
_EXISTS_RE = re.compile(r"^(!?)([\w./-]+)$")


def parse_selector(text: str) -> list[Requirement]:
    """``a=b,c!=d,e,!f,g in (x,y)`` -> (key, op, values) requirements, all of which must hold."""
    out = []
    for part in _split_top_level(text):
        if m := _SET_RE.match(part):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            out.append((m.group(1), m.group(2), values))
        elif m := _EQ_RE.match(part):
            out.append((m.group(1), "!=" if m.group(2) == "!=" else "=", frozenset([m.group(3)])))
        elif m := _EXISTS_RE.match(part):
            out.append((m.group(2), "!" if m.group(1) else "exists", frozenset()))
        else:
            raise BadRequest(f"unable to parse requirement: {part!r}")
    return out


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def matches(selector: list[Requirement], labels: dict[str, str]) -> bool:
    for key, op, values in selector:
        present = key in labels
        ok = {
            "=": present and labels.get(key) in values,
            "!=": not present or labels.get(key) not in values,
            "in": present and labels.get(key) in values,
            "notin": not present or labels.get(key) not in values,
            "exists": present,
            "!": not present,
        }[op]
        if not ok:
            return False
    return True


def parse_fields(text: str) -> list[Requirement]:
    """``metadata.name=x,metadata.namespace!=y``: the field selectors every type serves."""
    out = []
    for part in _split_top_level(text):
        m = re.match(r"^([\w.]+)\s*(==|=|!=)\s*(.*)$", part)
        if m is None:
            raise BadRequest(f"invalid selector: {part!r}; can't understand {part!r}")
        if m.group(1) not in FIELDS:
            raise BadRequest(
                f"field label not supported: {m.group(1)} (the double does not implement "
                f"it: only {' and '.join(FIELDS)})"
            )
        out.append((m.group(1), "!=" if m.group(2) == "!=" else "=", frozenset([m.group(3)])))
    return out


@dataclass(frozen=True)
class Scope:
    """Which objects a list or watch request sees: its namespace and selectors."""

    namespace: str | None
    labels: list[Requirement]
    fields: list[Requirement]

    @classmethod
    def parse(cls, namespace: str | None, labels: str = "", fields: str = "") -> Scope:
        """A bad selector is a 400, raised before any answer is sent."""
        return cls(namespace, parse_selector(labels), parse_fields(fields))

    def holds(self, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        if self.namespace is not None and meta.get("namespace", "") != self.namespace:
            return False
        values = {"metadata.name": meta["name"], "metadata.namespace": meta.get("namespace", "")}
        return matches(self.labels, meta.get("labels") or {}) and matches(self.fields, values)


# -- the store ---------------------------------------------------------------------------


class Store:
    """All state, guarded by one condition that watchers wait on."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.rv = 100
        self.compacted = 0
        self.epoch = 0  # bumped by compact(): open watch streams end with 410
        self.objects: dict[str, dict[Key, dict[str, Any]]] = {plural: {} for plural in STORED}
        self.history: list[Event] = []
        for name in ("default", "kube-system", "kube-public"):
            self.put(NAMESPACES, "", name, {"spec": {"finalizers": ["kubernetes"]}})

    def put(
        self,
        resource: str,
        namespace: str,
        name: str,
        body: dict[str, Any],
        *,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create or replace one object; ``body`` holds its spec, status and any extra
        metadata."""
        meta: dict[str, Any] = {"name": name}
        # Like the real API, empty maps are left out of the object.
        if labels:
            meta["labels"] = dict(labels)
        if annotations:
            meta["annotations"] = dict(annotations)
        meta.update(body.pop("metadata", {}))  # extra metadata, e.g. deletionTimestamp
        return self.write(resource, namespace, {"metadata": meta, **body})

    def write(self, resource: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store ``obj`` (created or replaced) as the API server would: the server fills
        in kind, uid, resourceVersion, creationTimestamp and the namespace."""
        api_version, kind = TYPES[resource].group_version, TYPES[resource].kind
        meta = dict(obj.get("metadata") or {})
        name = meta["name"]
        with self.cond:
            self.rv += 1
            old = self.objects[resource].get((namespace, name))
            meta.update(
                uid=old["metadata"]["uid"] if old else str(uuid.uuid4()),
                resourceVersion=str(self.rv),
                creationTimestamp=old["metadata"]["creationTimestamp"] if old else now(),
            )
            if namespace:
                meta["namespace"] = namespace
            else:
                meta.pop("namespace", None)
            stored = {**obj, "apiVersion": api_version, "kind": kind, "metadata": meta}
            self.objects[resource][(namespace, name)] = stored
            self._record(resource, "MODIFIED" if old else "ADDED", stored, old)
            return copy.deepcopy(stored)

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self.cond:
            obj = self.objects[resource].get((namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def create(self, resource: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        """A POST: 409 AlreadyExists when the name is taken."""
        with self.cond:
            if (namespace, obj["metadata"]["name"]) in self.objects[resource]:
                raise Conflict(
                    f'{TYPES[resource].qualified} "{obj["metadata"]["name"]}" already exists'
                )
            return self.write(resource, namespace, obj)

    def delete(self, resource: str, namespace: str, name: str) -> bool:
        with self.cond:
            obj = self.objects[resource].pop((namespace, name), None)
            if obj is None:
                return False
            self.rv += 1
            prev = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self._record(resource, "DELETED", obj, prev)
            return True

    def compact(self) -> None:
        with self.cond:
            self.compacted = self.rv
            self.history.clear()
            self.epoch += 1
            self.cond.notify_all()

    def list(
        self,
        resource: str,
        namespace: str | None,
        selector: str,
        limit: int,
        token: str | None,
        fields: str = "",
    ) -> dict[str, Any]:
        """One page of a list, in the real API's shape, with a continue token if more."""
        scope = Scope.parse(namespace, selector, fields)
        with self.cond:
            snapshot, start = _decode_token(token) if token else (self.rv, "")
            if snapshot < self.compacted:
                raise Expired(
                    "The provided continue parameter is too old to display a "
                    "consistent list result. You can start a new list without the "
                    "continue parameter."
                )
            matching = [
                obj
                for key, obj in sorted(self.objects[resource].items())
                if key > tuple(start.split("/", 1)) and scope.holds(obj)
            ]
            page = [copy.deepcopy(obj) for obj in (matching[:limit] if limit > 0 else matching)]
        if not TYPES[resource].custom:
            # Items of a built-in list carry no kind or apiVersion: only the list does.
            for item in page:
                item.pop("kind", None)
                item.pop("apiVersion", None)
        meta: dict[str, Any] = {"resourceVersion": str(snapshot)}
        if len(page) < len(matching):
            last = page[-1]["metadata"]
            meta["continue"] = _encode_token(
                snapshot, f"{last.get('namespace', '')}/{last['name']}"
            )
            meta["remainingItemCount"] = len(matching) - len(page)
        kind = TYPES[resource]
        return {
            "apiVersion": kind.group_version,
            "kind": f"{kind.kind}List",
            "metadata": meta,
            "items": page,
        }

    def current(self, resource: str, scope: Scope) -> list[Event]:
        """Synthetic ADDED events for a watch that starts from "now" (resourceVersion 0)."""
        with self.cond:
            return [
                Event(self.rv, resource, "ADDED", copy.deepcopy(obj))
                for _, obj in sorted(self.objects[resource].items())
                if scope.holds(obj)
            ]

    def events_after(self, resource: str, rv: int, scope: Scope) -> list[Event]:
        """Events newer than ``rv`` as this watcher sees them; the caller holds ``cond``."""
        if rv < self.compacted:
            raise Expired(f"too old resource version: {rv} ({self.compacted})")
        seen = (
            _as_seen(event, scope)
            for event in self.history
            if event.rv > rv and event.resource == resource
        )
        return [event for event in seen if event is not None]

    def _record(
        self, resource: str, type_: str, obj: dict[str, Any], prev: dict[str, Any] | None = None
    ) -> None:
        self.history.append(
            Event(self.rv, resource, type_, copy.deepcopy(obj), copy.deepcopy(prev))
        )
        self.cond.notify_all()


def _as_seen(event: Event, scope: Scope) -> Event | None:
    """An event through a watcher's filter, as the API server's watch cache turns it: an
    object that starts matching is ADDED, one that stops matching is DELETED (carrying
    its last matching state at the event's resourceVersion), one that never matched is
    not sent."""
    now_in = event.type != "DELETED" and scope.holds(event.obj)
    was_in = event.prev is not None and scope.holds(event.prev)
    if now_in and was_in:
        return Event(event.rv, event.resource, "MODIFIED", event.obj)
    if now_in:
        return Event(event.rv, event.resource, "ADDED", event.obj)
    if was_in and event.prev is not None:
        last = copy.deepcopy(event.prev)
        last["metadata"]["resourceVersion"] = str(event.rv)
        return Event(event.rv, event.resource, "DELETED", last)
    return None


def _encode_token(rv: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_token(token: str) -> tuple[int, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise BadRequest(f"continue key is not valid: {exc}") from None


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
