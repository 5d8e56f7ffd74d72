"""What the Redis and PostgreSQL registry kinds share: their connection settings, how a
secret file is read, and which writes they refuse before sending anything."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import model_validator

from config.errors import ConfigError
from config.settings import Duration, RegistrySettingsBase
from daemon.plan import Changes
from daemon.registry.base import Refused
from discovery.codec import Entry


class StoreSettings(RegistrySettingsBase):
    """``url``, ``password_file``, the TLS files and ``timeout`` (connect and per
    command) of a Redis or PostgreSQL server."""

    url: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    timeout: Duration = 10.0

    @model_validator(mode="after")
    def _client_pair(self) -> StoreSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


def read_secret(path: Path, key: str) -> str:
    """A secret file's content, read once at start (or reload), like the Consul token."""
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{key} {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class Writes:
    """A plan as a store applies it: one key or row per id, so a case-only rename
    deletes the old id; an entry carrying another owner is refused, never sent."""

    upserts: tuple[Entry, ...]
    deletes: tuple[Entry, ...]
    refused: tuple[Refused, ...]


def writes(changes: Changes, owner: str) -> Writes:
    wanted = (*changes.create, *(update.new for update in changes.update))
    renamed = tuple(u.old for u in changes.update if u.old.id != u.new.id)
    return Writes(
        upserts=tuple(entry for entry in wanted if entry.owner == owner),
        deletes=(*changes.delete, *renamed),
        refused=tuple(
            Refused(entry.id, f"entry carries capsync-owner {entry.owner!r}; this registry "
                              f"is {owner!r}")
            for entry in wanted if entry.owner != owner
        ),
    )
