"""The inbox in Consul KV: with leader election on, every daemon accepts registrations and
the leader syncs them all. One key per registration, ``<prefix>/<lower-case id>``,
holding the registration as JSON; writes go through /v1/txn (64 ops a request)."""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import Any

from config.errors import SourceError
from discovery.consul.client import ConsulClient, ConsulEndpoint
from discovery.inbox import InboxView, Registration, view_of

TXN_OPS = 64


# How often a check-and-set that lost to a concurrent write is read and tried again.
CAS_TRIES = 5


class ConsulInbox:
    """Reads accept only Consul's clean answers (a 404 is an empty inbox only when it
    carries X-Consul-Index, as Consul's own does; a proxy's 404 fails the read, so the
    push source is frozen, never emptied). Every read-modify-write (renew, purge, remove)
    is a check-and-set on each key's ModifyIndex: it never reverts a newer write; a lost
    race is read again and retried.

    Consul KV cannot filter values on its side, so a listing reads every key; what it
    costs per row is kept small instead: a key whose ModifyIndex is unchanged since the
    last read is not decoded again (the expired rows, unchanged until the purge, cost
    their bytes on the wire and a lookup)."""

    def __init__(self, endpoint: ConsulEndpoint, prefix: str) -> None:
        self.prefix = prefix.strip("/")
        self._client = ConsulClient(endpoint, error=SourceError)
        self._decoded: dict[str, tuple[int, Registration]] = {}

    def put(self, registrations: Sequence[Registration]) -> None:
        self._txn([self._set(r) for r in registrations])

    def remove(self, worker_id: str) -> bool:
        for _ in range(CAS_TRIES):
            found = self._items(self._key(worker_id), recurse=False)
            if not found:
                return False
            _, index = found[0]
            if self._txn([self._delete(worker_id, index)]):
                return True
        raise self._busy(f"remove {worker_id}")

    def get(self, worker_id: str) -> Registration | None:
        found = self._items(self._key(worker_id), recurse=False)
        return found[0][0] if found else None

    def all(self) -> list[Registration]:
        return [r for r, _ in self._items(self.prefix + "/", recurse=True)]

    def view(self, now: float, since: float | None) -> InboxView:
        return view_of(self.all(), now, since)

    def version(self) -> None:
        """None: other daemons write the prefix, and asking its index costs a listing of
        its keys; every look reads it (unchanged entries are not decoded again)."""
        return None

    def renew(self, conns: Collection[str], until: float) -> None:
        wanted = set(conns)
        for _ in range(CAS_TRIES):
            ops = [
                self._set(Registration(r.id, r.body, r.via, until, r.conn), index)
                for r, index in self._items(self.prefix + "/", recurse=True)
                if r.conn in wanted and r.expires is not None and r.expires < until
            ]
            if self._txn(ops):
                return
        raise self._busy("renew")

    def release(self, conn: str, at: float, until: float) -> None:
        for _ in range(CAS_TRIES):
            ops = [
                self._set(
                    replace(r, conn=None, released=at, expires=max(r.expires or until, until)),
                    index,
                )
                for r, index in self._items(self.prefix + "/", recurse=True)
                if r.conn == conn
            ]
            if self._txn(ops):
                return
        raise self._busy("release")

    def purge(self, before: float) -> int:
        for _ in range(CAS_TRIES):
            gone = [
                (r, index)
                for r, index in self._items(self.prefix + "/", recurse=True)
                if r.expires is not None and r.expires < before
            ]
            if self._txn([self._delete(r.id, index) for r, index in gone]):
                return len(gone)
        raise self._busy("purge")

    def close(self) -> None:
        self._client.close()

    def _key(self, worker_id: str) -> str:
        return f"{self.prefix}/{worker_id.lower()}"

    def _set(self, registration: Registration, index: int | None = None) -> dict[str, Any]:
        """A write of ``registration``; with ``index``, only while the key is unchanged."""
        value = base64.b64encode(json.dumps(registration.as_json()).encode()).decode()
        op: dict[str, Any] = {"Verb": "set", "Key": self._key(registration.id), "Value": value}
        if index is not None:
            op.update(Verb="cas", Index=index)
        return {"KV": op}

    def _delete(self, worker_id: str, index: int) -> dict[str, Any]:
        return {"KV": {"Verb": "delete-cas", "Key": self._key(worker_id), "Index": index}}

    def _busy(self, what: str) -> SourceError:
        return SourceError(
            f"inbox in Consul KV {self.prefix}: {what} lost to concurrent writes "
            f"{CAS_TRIES} times in a row; the next try reads again"
        )

    def _items(self, key: str, *, recurse: bool) -> list[tuple[Registration, int]]:
        """The registrations under ``key`` with their ModifyIndex."""
        path = f"/v1/kv/{key}"
        response = self._client.get(path, {"recurse": ""} if recurse else None)
        if response.status == 404 and response.index:
            return []  # Consul's own "no such key": it always carries X-Consul-Index
        if response.status != 200 or not isinstance(response.body, list):
            raise SourceError(
                f"inbox in Consul KV {key}: GET {path} answered {response.status} "
                f"({response.text.strip()[:120] or 'no body'}), not Consul's clean answer; "
                "the pushed registrations are kept as they are"
            )
        out = []
        decoded = self._decoded if recurse else {}
        fresh: dict[str, tuple[int, Registration]] = {}
        for item in response.body:
            try:
                index = int(item["ModifyIndex"])
                known = decoded.get(item["Key"])
                if known is None or known[0] != index:
                    data: Any = json.loads(base64.b64decode(item.get("Value") or ""))
                    known = (index, Registration.from_json(data))
                fresh[item["Key"]] = known
                out.append((known[1], index))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                key_name = item.get("Key") if isinstance(item, dict) else None
                raise SourceError(
                    f"inbox in Consul KV {key_name}: not a registration ({type(exc).__name__})"
                ) from None
        if recurse and key == self.prefix + "/":
            self._decoded = fresh
        return out

    def _txn(self, ops: list[dict[str, Any]]) -> bool:
        """Send ``ops`` (TXN_OPS a request); False when a check-and-set lost (409: that
        request rolled back whole, and the caller reads again)."""
        for start in range(0, len(ops), TXN_OPS):
            response = self._client.put("/v1/txn", ops[start : start + TXN_OPS])
            if response.status == 409 and _only_stale(response.body):
                return False
            if response.status != 200:
                raise SourceError(
                    f"inbox in Consul KV: transaction failed "
                    f"({response.status}): {response.text.strip()[:200]}"
                )
        return True


def _only_stale(body: Any) -> bool:
    """A 409 whose every error is a check-and-set that lost ("index is stale")."""
    errors = body.get("Errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors:
        return False
    return all(isinstance(e, dict) and "index is stale" in str(e.get("What", "")) for e in errors)
