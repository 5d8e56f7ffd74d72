"""A declaration <-> its registry entry, the full form included.

``codec`` encodes what Consul's tags and meta can hold; a declaration in the library's
full form, or one whose names meta cannot separate, also travels as a ``document`` (the
``seed_json`` form, compact JSON) that the registry stores beside the entry, so decoding
gives back every permission, expiry, attestation and ``verified`` flag, and every name as
written. Any other minimal-form declaration has no document: its
entry is exactly what it was before the full form existed.
"""

from __future__ import annotations

import json

from config.errors import DeclarationError
from discovery import codec, seed_json
from discovery.codec import Entry
from discovery.model import Capabilities

DOCUMENT_ROOT = "capsync/documents"


def document_key(owner: str, service: str, worker_id: str) -> str:
    """Where a registry keeps an entry's document: per service (a query reads one
    prefix), per owner (it owns the key), by the id lower-cased (ids compare
    case-insensitively)."""
    return f"{document_prefix(service)}{owner}/{worker_id.lower()}"


def document_prefix(service: str) -> str:
    return f"{DOCUMENT_ROOT}/{service}/"


def encode(caps: Capabilities, origin: codec.Provenance, *, now: int) -> Entry:
    full = caps.has_terms() or not codec.meta_lossless(caps)
    return codec.encode(
        caps,
        origin,
        now=now,
        document=_document(caps) if full else "",
        document_key=document_key(origin.owner, origin.service, caps.id) if full else "",
    )


def _document(caps: Capabilities) -> str:
    return json.dumps(seed_json.to_seed(caps), separators=(",", ":"), sort_keys=True)


def decode(entry: Entry) -> Capabilities:
    """The declaration back from its entry: the document when the entry has one."""
    if codec.DOCUMENT not in entry.meta:
        return codec.decode(entry)
    if not entry.document:
        raise DeclarationError(
            entry.id,
            [
                (
                    f"ServiceMeta.{codec.DOCUMENT}",
                    f"the full-form document {entry.meta[codec.DOCUMENT]!r} is missing",
                )
            ],
        )
    try:
        data = json.loads(entry.document)
    except ValueError as exc:
        raise DeclarationError(entry.id, [("document", f"not JSON: {exc}")]) from None
    caps = seed_json.from_seed(data, ref=entry.id)
    if caps.id.lower() != entry.id.lower():
        raise DeclarationError(
            entry.id, [("document.id", f"the document declares {caps.id!r}, not this entry's id")]
        )
    return caps
