"""The seed's stored form: a registry entry <-> the declaration JSON plus capsync's origin.

Redis (the JSON under the worker's key) and PostgreSQL (one JSONB column per category,
flags, metadata) hold the declaration exactly as the seed library serialises it, in
snake_case; capsync's bookkeeping (owner, service, source, ref, digest, address, port)
travels beside it, never inside it. Both registries convert through ``to_seed`` and
``from_seed`` only, so a richer declaration (the library's full tool form) is one change
here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from discovery import codec, schema
from discovery.codec import Entry
from discovery.model import Capabilities


def to_seed(caps: Capabilities) -> dict[str, Any]:
    """The seed's snake_case declaration: every category, flags and metadata present."""
    return schema.dump(caps)


def from_seed(data: Any, *, ref: str) -> Capabilities:
    """Read a stored declaration back; DeclarationError when it is not a valid one."""
    return schema.validate(data, ref=ref)


@dataclass(frozen=True)
class Origin:
    """What capsync keeps beside the seed's declaration to own and diff an entry."""

    owner: str
    service: str
    source: str
    ref: str
    digest: str
    address: str = ""
    port: int = 0


@dataclass(frozen=True)
class Stored:
    """One entry in the seed's form: the declaration, its compact JSON, its origin."""

    id: str
    declaration: dict[str, Any]
    origin: Origin
    tags: tuple[str, ...]

    @property
    def text(self) -> str:
        return json.dumps(self.declaration, separators=(",", ":"), ensure_ascii=False)


def stored(entry: Entry) -> Stored:
    origin = Origin(
        owner=entry.owner, service=entry.service, source=entry.source, ref=entry.ref,
        digest=entry.meta.get(codec.DIGEST, ""), address=entry.address, port=entry.port,
    )
    return Stored(entry.id, to_seed(codec.decode(entry)), origin, entry.tags)


def entry(declaration: Any, origin: Origin, *, where: str) -> Entry:
    """The entry a stored declaration stands for, digest recomputed from what is stored:
    content changed behind capsync's back shows up as a difference and is repaired."""
    caps = from_seed(declaration, ref=where)
    return codec.encode(
        caps, service=origin.service, owner=origin.owner, source=origin.source,
        ref=origin.ref, address=origin.address, port=origin.port,
    )


class Decoder:
    """Stored declarations -> entries, remembering the last ones: an entry whose stored
    text and origin are unchanged is not parsed, validated or digested again, so a steady
    cycle costs a read and a hash per entry."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[bytes, Entry]] = {}

    def entry(self, worker_id: str, raw: tuple[str | None, ...], origin: Origin,
              load: Callable[[], Any], *, where: str) -> Entry:
        """``raw`` is the stored text as read; ``load`` parses it into the declaration.
        DeclarationError (or ValueError from ``load``) when it does not decode."""
        key = _fingerprint(raw, origin)
        known = self._known.get(worker_id)
        if known is not None and known[0] == key:
            return known[1]
        found = entry(load(), origin, where=where)
        self._known[worker_id] = (key, found)
        return found

    def written(self, found: Entry, raw: tuple[str | None, ...], origin: Origin) -> None:
        """An entry just written, with the stored text it reads back as: the next
        snapshot knows it without decoding."""
        self._known[found.id] = (_fingerprint(raw, origin), found)

    def keep_only(self, worker_ids: Collection[str]) -> None:
        """Forget entries that are gone, so the memory follows the registry."""
        self._known = {k: v for k, v in self._known.items() if k in worker_ids}


def _fingerprint(raw: tuple[str | None, ...], origin: Origin) -> bytes:
    return hashlib.blake2b(repr((raw, origin)).encode(), digest_size=16).digest()
