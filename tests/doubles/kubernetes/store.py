"""The double's object store: pods and WorkerCapabilities behind one resourceVersion.

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

PODS = "pods"
RESOURCES = "workercapabilities"
LIST_KINDS = {PODS: ("v1", "PodList"), RESOURCES: ("valkra.io/v1", "WorkerCapabilitiesList")}
ITEM_KINDS = {PODS: ("v1", "Pod"), RESOURCES: ("valkra.io/v1", "WorkerCapabilities")}

Key = tuple[str, str]


class Expired(Exception):
    """A resourceVersion or continue token older than the compacted history (410)."""


class BadRequest(Exception):
    """A query the API server would refuse with 400 (bad selector, bad token)."""


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


def parse_selector(text: str) -> list[tuple[str, str, frozenset[str]]]:
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


def matches(selector: list[tuple[str, str, frozenset[str]]], labels: dict[str, str]) -> bool:
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


# -- the store ---------------------------------------------------------------------------


class Store:
    """All state, guarded by one condition that watchers wait on."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.rv = 100
        self.compacted = 0
        self.epoch = 0  # bumped by compact(): open watch streams end with 410
        self.objects: dict[str, dict[Key, dict[str, Any]]] = {PODS: {}, RESOURCES: {}}
        self.history: list[Event] = []

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
        with self.cond:
            self.rv += 1
            old = self.objects[resource].get((namespace, name))
            api_version, kind = ITEM_KINDS[resource]
            meta: dict[str, Any] = {
                "name": name,
                "namespace": namespace,
                "uid": old["metadata"]["uid"] if old else str(uuid.uuid4()),
                "resourceVersion": str(self.rv),
                "creationTimestamp": old["metadata"]["creationTimestamp"] if old else now(),
            }
            # Like the real API, empty maps are left out of the object.
            if labels:
                meta["labels"] = dict(labels)
            if annotations:
                meta["annotations"] = dict(annotations)
            meta.update(body.pop("metadata", {}))  # extra metadata, e.g. deletionTimestamp
            obj = {"apiVersion": api_version, "kind": kind, "metadata": meta, **body}
            self.objects[resource][(namespace, name)] = obj
            self._record(resource, "MODIFIED" if old else "ADDED", obj, old)
            return copy.deepcopy(obj)

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
        self, resource: str, namespace: str | None, selector: str, limit: int, token: str | None
    ) -> dict[str, Any]:
        """One page of a list, in the real API's shape, with a continue token if more."""
        requirements = parse_selector(selector)
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
                if key > tuple(start.split("/", 1)) and _in_scope(obj, namespace, requirements)
            ]
            page = [copy.deepcopy(obj) for obj in (matching[:limit] if limit > 0 else matching)]
        if resource == PODS:
            # Items of a built-in list carry no kind or apiVersion: only the list does.
            for item in page:
                item.pop("kind", None)
                item.pop("apiVersion", None)
        meta: dict[str, Any] = {"resourceVersion": str(snapshot)}
        if len(page) < len(matching):
            last = page[-1]["metadata"]
            meta["continue"] = _encode_token(snapshot, f"{last['namespace']}/{last['name']}")
            meta["remainingItemCount"] = len(matching) - len(page)
        api_version, kind = LIST_KINDS[resource]
        return {"apiVersion": api_version, "kind": kind, "metadata": meta, "items": page}

    def current(self, resource: str, namespace: str | None, selector: str) -> list[Event]:
        """Synthetic ADDED events for a watch that starts from "now" (resourceVersion 0)."""
        requirements = parse_selector(selector)
        with self.cond:
            return [
                Event(self.rv, resource, "ADDED", copy.deepcopy(obj))
                for _, obj in sorted(self.objects[resource].items())
                if _in_scope(obj, namespace, requirements)
            ]

    def events_after(
        self,
        resource: str,
        rv: int,
        namespace: str | None,
        requirements: list[tuple[str, str, frozenset[str]]],
    ) -> list[Event]:
        """Events newer than ``rv`` as this watcher sees them; the caller holds ``cond``."""
        if rv < self.compacted:
            raise Expired(f"too old resource version: {rv} ({self.compacted})")
        seen = (
            _as_seen(event, namespace, requirements)
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


def _as_seen(
    event: Event, namespace: str | None, requirements: list[tuple[str, str, frozenset[str]]]
) -> Event | None:
    """An event through a watcher's filter, as the API server's watch cache turns it: an
    object that starts matching is ADDED, one that stops matching is DELETED (carrying
    its last matching state at the event's resourceVersion), one that never matched is
    not sent."""
    now_in = event.type != "DELETED" and _in_scope(event.obj, namespace, requirements)
    was_in = event.prev is not None and _in_scope(event.prev, namespace, requirements)
    if now_in and was_in:
        return Event(event.rv, event.resource, "MODIFIED", event.obj)
    if now_in:
        return Event(event.rv, event.resource, "ADDED", event.obj)
    if was_in and event.prev is not None:
        last = copy.deepcopy(event.prev)
        last["metadata"]["resourceVersion"] = str(event.rv)
        return Event(event.rv, event.resource, "DELETED", last)
    return None


def _in_scope(
    obj: dict[str, Any], namespace: str | None, requirements: list[tuple[str, str, frozenset[str]]]
) -> bool:
    meta = obj["metadata"]
    if namespace is not None and meta["namespace"] != namespace:
        return False
    return matches(requirements, meta.get("labels") or {})


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
