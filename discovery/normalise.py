"""Listings -> validated Capabilities, each failure kept with enough to protect its entry."""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, replace
from typing import Any

from config.errors import DeclarationError
from config.events import emit
from discovery import schema
from discovery.model import Capabilities
from discovery.sources.base import Declaration, Listing
from discovery.validations import Validations, persistable


@dataclass(frozen=True, slots=True)
class Found:
    caps: Capabilities
    declaration: Declaration


@dataclass(frozen=True)
class Invalid:
    """A declaration that was reported and skipped.

    ``worker_id`` is the id it claimed, when it got that far: the registry entry of that
    worker (or of that source reference) is left exactly as it was.
    """

    source: str
    error: DeclarationError
    worker_id: str | None = None

    @property
    def ref(self) -> str:
        return self.error.ref


def normalise(listing: Listing, source: str) -> tuple[list[Found], list[Invalid]]:
    return Normaliser().normalise(listing, source)


class Normaliser:
    """Validation with a memory: a declaration whose source reports the same fingerprint
    at the same reference as last cycle is not validated again (in a steady cycle of a
    large fleet, validation is most of the work). Only what was listed in the latest
    cycle is remembered, per source.

    With ``validations`` (a file in the state directory), a new process starts from
    what the last one validated: a declaration whose content (its fingerprint is its text
    or a digest of its bytes) was validated before is not validated again."""

    def __init__(self, validations: Validations | None = None) -> None:
        self._memory: dict[str, dict[tuple[Any, ...], Found | Invalid]] = {}
        self.validations = validations or Validations(None)
        self._changed = False  # the memory differs from what is on disk
        self.reused = 0  # declarations of the last listing whose validation was on disk
        # source -> (the listing it handed over, what it gave): a source that lists
        # exactly what it listed before gets back the same lists, so the cycle can tell
        # nothing changed. The same Listing object (the file source's) is not even
        # walked; a new one is when each of its declarations is the remembered one at
        # the same place (a fingerprinted source: Docker, Kubernetes, Consul, push).
        # The listing is held weakly (its source keeps it, if it hands it back), with its
        # size and whether it held unreadable items: a pushed body lives no longer here.
        self._last: dict[str, tuple[Seen, list[Found], list[Invalid]]] = {}

    def normalise(self, listing: Listing, source: str) -> tuple[list[Found], list[Invalid]]:
        last = self._last.get(source)
        if last is not None and last[0].listing() is listing:
            return last[1], last[2]
        found: list[Found] = []
        invalid = [Invalid(source=source, error=error) for error in listing.invalid]
        first = source not in self._memory
        previous, current = self._memory.get(source, {}), {}
        kept = self.validations.kept(source) if first else {}
        remembered = validated = self.reused = 0
        for declaration in listing.declarations:
            key = (
                declaration.ref,
                declaration.fingerprint,
                declaration.default_id,
                declaration.address,
            )
            result = previous.get(key) if declaration.fingerprint is not None else None
            if result is None and (caps := kept.get(key)) is not None:
                result = Found(caps, declaration.without_body())
                self.reused += 1
            elif result is None:
                result = _validate(declaration, source)
                validated += 1
            elif isinstance(result, Found) and (
                result.declaration.health is not declaration.health
                and result.declaration.health != declaration.health
            ):
                # Health is no part of the declaration: the validation is reused, but
                # the listing is not the one remembered (its health is news).
                result = Found(result.caps, replace(result.declaration, health=declaration.health))
            else:
                remembered += 1
            if declaration.fingerprint is not None:
                current[key] = result
            if isinstance(result, Found):
                found.append(result)
            else:
                invalid.append(result)
        self._memory[source] = current
        self.validations.release(source)
        if first and self.reused:
            emit(
                logging.INFO,
                "validations_reused",
                source=source,
                reused=self.reused,
                validated=validated,
            )
        self._changed |= bool(validated) or len(current) != len(kept if first else previous)
        if last is not None and _relisted(listing, last[0], remembered, current, previous):
            found, invalid = last[1], last[2]
        self._last[source] = (Seen.of(listing), found, invalid)
        return found, invalid

    def save(self, *, now: bool = False) -> None:
        """Write what is remembered to disk, when it changed and a write is due (or
        ``now``: the process is stopping)."""
        if not self._changed or not (now or self.validations.due()):
            return
        self.validations.save(
            {
                source: {
                    key: result.caps
                    for key, result in memory.items()
                    if isinstance(result, Found) and persistable(key[1])
                }
                for source, memory in self._memory.items()
            }
        )
        self._changed = False


@dataclass(frozen=True)
class Seen:
    """What the Normaliser remembers of the last listing of a source."""

    listing: weakref.ref[Listing]
    count: int
    unreadable: bool

    @classmethod
    def of(cls, listing: Listing) -> Seen:
        return cls(weakref.ref(listing), len(listing.declarations), bool(listing.invalid))


def _relisted(
    listing: Listing,
    before: Seen,
    remembered: int,
    current: dict[tuple[Any, ...], Found | Invalid],
    previous: dict[tuple[Any, ...], Found | Invalid],
) -> bool:
    """Whether ``listing`` holds exactly what ``before`` held: no unreadable item in
    either, and every declaration of both remembered (fingerprinted, each at its own
    place), the same ones in the same order."""
    count = len(listing.declarations)
    return (
        not listing.invalid
        and not before.unreadable
        and remembered == count == before.count == len(current) == len(previous)
        and list(current) == list(previous)
    )


def _validate(declaration: Declaration, source: str) -> Found | Invalid:
    data = declaration.data
    try:
        data = declaration.body()
        caps = schema.validate(data, ref=declaration.ref, default_id=declaration.default_id)
    except DeclarationError as error:
        return Invalid(source, error, _claimed_id(declaration, data))
    # Remembered until the next cycle: keep where it came from, not its raw body.
    return Found(caps, declaration.without_body())


def _claimed_id(declaration: Declaration, data: Any) -> str | None:
    """The id the body claims (``data``: the body as read, parsed late or read again);
    the source's default id when it claims none or could not be read."""
    claimed = data.get("id") if isinstance(data, dict) else None
    return claimed if isinstance(claimed, str) else declaration.default_id
