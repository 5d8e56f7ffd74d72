"""The inbox in Consul KV: with leader election on, every daemon accepts registrations and
the leader syncs them all. One key per registration, ``<prefix>/<lower-case id>``,
holding the registration as JSON; writes go through /v1/txn (64 ops a request)."""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Sequence
from typing import Any

from config.errors import SourceError
from discovery.consul.client import ConsulClient, ConsulEndpoint
from discovery.inbox import Registration

TXN_OPS = 64


class ConsulInbox:
    def __init__(self, endpoint: ConsulEndpoint, prefix: str) -> None:
        self.prefix = prefix.strip("/")
        self._client = ConsulClient(endpoint, error=SourceError)

    def put(self, registrations: Sequence[Registration]) -> None:
        self._txn(
            [
                {
                    "KV": {
                        "Verb": "set",
                        "Key": self._key(r.id),
                        "Value": base64.b64encode(json.dumps(r.as_json()).encode()).decode(),
                    }
                }
                for r in registrations
            ]
        )

    def remove(self, worker_id: str) -> bool:
        if self.get(worker_id) is None:
            return False
        self._txn([{"KV": {"Verb": "delete", "Key": self._key(worker_id)}}])
        return True

    def get(self, worker_id: str) -> Registration | None:
        found = self._list(self._key(worker_id), recurse=False)
        return found[0] if found else None

    def all(self) -> list[Registration]:
        return self._list(self.prefix + "/", recurse=True)

    def renew(self, conns: Collection[str], until: float) -> None:
        wanted = set(conns)
        self.put(
            [
                Registration(r.id, r.body, r.via, until, r.conn)
                for r in self.all()
                if r.conn in wanted and r.expires is not None and r.expires < until
            ]
        )

    def purge(self, before: float) -> int:
        gone = [r for r in self.all() if r.expires is not None and r.expires < before]
        self._txn([{"KV": {"Verb": "delete", "Key": self._key(r.id)}} for r in gone])
        return len(gone)

    def close(self) -> None:
        self._client.close()

    def _key(self, worker_id: str) -> str:
        return f"{self.prefix}/{worker_id.lower()}"

    def _list(self, key: str, *, recurse: bool) -> list[Registration]:
        response = self._client.get(f"/v1/kv/{key}", {"recurse": ""} if recurse else None)
        if response.status == 404:
            return []
        if response.status != 200 or not isinstance(response.body, list):
            raise SourceError(f"inbox in Consul KV {key}: unexpected answer ({response.status})")
        out = []
        for item in response.body:
            try:
                data: Any = json.loads(base64.b64decode(item.get("Value") or ""))
                out.append(Registration.from_json(data))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise SourceError(
                    f"inbox in Consul KV {item.get('Key')}: not a "
                    f"registration ({type(exc).__name__})"
                ) from None
        return out

    def _txn(self, ops: list[dict[str, Any]]) -> None:
        for start in range(0, len(ops), TXN_OPS):
            response = self._client.put("/v1/txn", ops[start : start + TXN_OPS])
            if response.status != 200:
                raise SourceError(
                    f"inbox in Consul KV: transaction failed "
                    f"({response.status}): {response.text.strip()[:200]}"
                )
