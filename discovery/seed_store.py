"""An entry as the seed-layout stores keep it: the declaration JSON plus capsync's origin.

Redis (the JSON under the worker's key) and PostgreSQL (one JSONB column per category,
flags, metadata) hold the declaration exactly as the seed library serialises it
(``seed_json.to_seed``: the full form, every field present); capsync's bookkeeping (owner,
service, source, ref, digest, address, port) travels beside it, never inside it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Any

from discovery import codec, full_entry, seed_json
from discovery.codec import DIGEST, DOCUMENT, Entry
from discovery.health import health_from_text


@dataclass(frozen=True)
class Origin:
    """What capsync keeps beside the seed's declaration to own and diff an entry."""

    owner: str
    service: str
    source: str
    ref: str
    digest: str
    address: str = ""
    meta: str = "{}"  # the entry's meta as written (JSON): time-dependent parts included
    port: int = 0


@dataclass(frozen=True)
class Stored:
    """One entry in the seed's form: the declaration, its compact JSON, its origin."""

    id: str
    declaration: dict[str, Any]
    origin: Origin
    tags: tuple[str, ...]
    all_tools: tuple[str, ...]  # the seed's all_tools(): what its tool index holds
    valid_until: int | None  # when time alone changes what the entry says (expiry)

    @property
    def text(self) -> str:
        return json.dumps(self.declaration, separators=(",", ":"), ensure_ascii=False)


def stored(entry: Entry, now: int) -> Stored:
    caps = full_entry.decode(entry)
    origin = Origin(
        owner=entry.owner,
        service=entry.service,
        source=entry.source,
        ref=entry.ref,
        digest=entry.meta.get(DIGEST, ""),
        address=entry.address,
        port=entry.port,
        meta=json.dumps(dict(entry.meta), sort_keys=True, separators=(",", ":")),
    )
    return Stored(
        entry.id,
        seed_json.to_seed(caps),
        origin,
        entry.tags,
        tuple(caps.all_tools()),
        caps.changes_at(now),
    )


@dataclass(frozen=True)
class Row:
    """One entry as a store read it: its id, its stored text as read (an unchanged row
    is recognised by it), capsync's origin kept beside it, and its tags."""

    id: str
    raw: tuple[str | None, ...]
    origin: Origin
    tags: tuple[str, ...]


def entry(row: Row, declaration: Any, *, where: str, now: int) -> tuple[Entry, int | None]:
    """The entry as it was written (its tags and meta, judged at the writer's clock), and
    until when it holds. When the stored declaration no longer says what that entry says
    (edited behind capsync's back), the entry it stands for now instead: it differs from
    the desired one, so the next apply repairs it."""
    caps, origin = seed_json.from_seed(declaration, ref=where), row.origin
    meta = json.loads(origin.meta)
    document = json.dumps(seed_json.to_seed(caps), separators=(",", ":"), sort_keys=True)
    written = Entry(
        row.id,
        origin.service,
        row.tags,
        meta,
        origin.address,
        origin.port,
        document if DOCUMENT in meta else "",
    )
    if meta.get(DIGEST) == origin.digest and full_entry.decode(written) == caps:
        return written, caps.changes_at(now)
    found = full_entry.encode(
        caps,
        codec.Provenance(
            origin.service, origin.owner, origin.source, origin.ref, origin.address, origin.port
        ),
        now=now,
    )
    return found, caps.changes_at(now)


class Decoder:
    """Stored declarations -> entries, remembering the last ones: an entry whose stored
    text and origin are unchanged (and whose tools' expiry has not come) is not parsed,
    validated or digested again, so a steady cycle costs a read and a hash per entry."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[bytes, Entry, int | None]] = {}

    def entry(self, row: Row, load: Callable[[], Any], *, where: str, now: int) -> Entry:
        """``load`` parses the row's stored text into the declaration. DeclarationError
        (or ValueError from ``load``) when it does not decode."""
        key = _fingerprint((*row.raw, *row.tags), row.origin)
        known = self._known.get(row.id)
        if known is not None and known[0] == key and (known[2] is None or now < known[2]):
            return known[1]
        found, until = entry(row, load(), where=where, now=now)
        self._known[row.id] = (key, found, until)
        return found

    def written(self, found: Entry, raw: tuple[str | None, ...], stored: Stored) -> None:
        """An entry just written, with the stored text it reads back as: the next
        snapshot knows it without decoding."""
        key = _fingerprint((*raw, *stored.tags), stored.origin)
        self._known[found.id] = (key, found, stored.valid_until)

    def keep_only(self, worker_ids: Collection[str]) -> None:
        """Forget entries that are gone, so the memory follows the registry."""
        self._known = {k: v for k, v in self._known.items() if k in worker_ids}


def _fingerprint(raw: tuple[str | None, ...], origin: Origin) -> bytes:
    return hashlib.blake2b(repr((raw, origin)).encode(), digest_size=16).digest()


def with_health(found: Entry, stored: str | None) -> Entry:
    """The entry with the health a store keeps beside it (``health_text``); UNKNOWN when
    it keeps none yet. The decoded entry is reused as it is when the health matches."""
    health = health_from_text(stored)
    return found if found.health == health else replace(found, health=health)
