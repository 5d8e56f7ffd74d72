"""Listings -> validated Capabilities, each failure kept with enough to protect its entry."""

from __future__ import annotations

from dataclasses import dataclass

from config.errors import DeclarationError
from discovery import schema
from discovery.model import Capabilities
from discovery.sources.base import Declaration, Listing


@dataclass(frozen=True)
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
    found: list[Found] = []
    invalid = [Invalid(source=source, error=error) for error in listing.invalid]
    for declaration in listing.declarations:
        try:
            caps = schema.validate(
                declaration.data, ref=declaration.ref, default_id=declaration.default_id
            )
        except DeclarationError as error:
            invalid.append(Invalid(source, error, _claimed_id(declaration)))
        else:
            found.append(Found(caps, declaration))
    return found, invalid


def _claimed_id(declaration: Declaration) -> str | None:
    data = declaration.data
    claimed = data.get("id") if isinstance(data, dict) else None
    return claimed if isinstance(claimed, str) else declaration.default_id
