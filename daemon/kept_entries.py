"""The encoded entries kept on disk, so that a new process (``capsync run --once``, a
restart) does not encode again what an earlier one encoded.

Encoding is a pure function of the validated declaration, the entry's provenance (the
registry's service and owner, the source, ref and address) and which tools are live at
the instant (``changes_at``: the next time that answer changes). An entry is therefore
reused only under the rule a running process already follows from cycle to cycle:

- found by what the declaration *is* (its source, ref, default id, address and a
  fingerprint that is its content or a digest of it: ``persistable``), under the
  registry's name, exact service and owner;
- only while the declaration's ``changes_at`` is the one it was encoded at (time has
  changed nothing about it since);
- written by the same code: the header's digest covers every module of ``discovery``,
  ``config`` and ``daemon``; anything else (damaged, foreign, not ours) is ignored with one
  log line and every entry is encoded, as without the file.

The file sits beside the validations (``[daemon] validations``), in the same format, and is
off when they are. It holds the entries a registry wanted, never what a registry holds:
the registry is still read, so nothing here can make capsync skip a write or delete what
it does not own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from config.events import emit
from discovery.codec import Entry
from discovery.normalise import Found
from discovery.validations import CODE, Format, Kept, Validations, persistable

MAGIC = b"capsync-entries 1\n"
FILE = "entries.cache"
# (source, ref, fingerprint, default id, address): the declaration an entry encodes.
Key = tuple[str, str, Hashable, str | None, str]
# An instant the entry held at, the declaration's changes_at then, and the entry.
Encoded = tuple[int, int | None, Entry]


def _valid(value: Any) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 3  # an instant, the changes_at then, the entry
        and isinstance(value[0], int)
        and (value[1] is None or isinstance(value[1], int))
        and isinstance(value[2], Entry)
    )


FORMAT = Format(MAGIC, "entries", "encoding every entry", _valid, (*CODE, "daemon"))


class KeptEntries(Kept[Key, Encoded]):
    """Registry (``part``) -> declaration key -> its encoded entry, in the file at
    ``path`` (None: nothing is kept on disk)."""

    def __init__(self, path: Path | None) -> None:
        super().__init__(path, FORMAT)

    def times(self) -> dict[Key, tuple[int, int | None]]:
        """Each kept declaration's changes_at and an instant it held at, whichever
        registry encoded it (changes_at is the declaration's alone)."""
        return {k: (v[0], v[1]) for part in self.parts() for k, v in self.kept(part).items()}

    @classmethod
    def beside(cls, validations: Validations) -> KeptEntries:
        """The file beside the validations; none when they are off."""
        path = validations.path
        return cls(None if path is None else path.with_name(FILE))


class Keeper(Protocol):
    """A registry's encoder, as this module sees it."""

    part: str
    entries_changed: bool

    def entries_kept(self) -> dict[Key, Encoded]: ...


def part(name: str, service: str, owner: str) -> str:
    """A registry's place in the file: its entries carry the service and owner."""
    return json.dumps([name, service, owner])


def key(found: Found) -> Key | None:
    """The declaration's key, when its fingerprint is its content (else never kept)."""
    decl = found.declaration
    if not persistable(decl.fingerprint):
        return None
    return (decl.source, decl.ref, decl.fingerprint, decl.default_id, decl.address)


def reused(registry: str, count: int, encoded: int) -> None:
    emit(logging.INFO, "entries_reused", registry=registry, reused=count, encoded=encoded)


def save(kept: KeptEntries, keepers: Sequence[Keeper], *, now: bool = False) -> None:
    """Write every registry's encoded entries, when one changed and a write is due (or
    ``now``: the process is stopping)."""
    if not any(k.entries_changed for k in keepers) or not (now or kept.due()):
        return
    kept.save({k.part: k.entries_kept() for k in keepers})
    for k in keepers:
        k.entries_changed = False


def memory(encoded: Iterable[tuple[Found, int | None, Entry]], now: int) -> dict[Key, Encoded]:
    """What is kept of a registry's encoded entries (each's changes_at was worked out at
    ``now``): those of persistable declarations."""
    return {found_key: (now, at, entry) for item, at, entry in encoded if (found_key := key(item))}


def changes_at(times: dict[Key, tuple[int, int | None]], found: Found, now: int) -> int | None:
    """When time next changes what ``found`` answers, after ``now``: an earlier
    process's answer while it still holds (worked out at an instant no later than
    ``now``, and still ahead of it, or never), else worked out."""
    kept = times.get(found_key) if times and (found_key := key(found)) else None
    if kept is not None and kept[0] <= now and (kept[1] is None or now < kept[1]):
        return kept[1]
    return found.caps.changes_at(now)
