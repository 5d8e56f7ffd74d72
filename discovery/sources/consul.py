"""The consul source: services that others registered in Consul declaring capabilities.

An instance declares either with the meta key ``worker-capabilities`` holding the JSON
declaration, or in the registry encoding itself (category keys, ``flag-*``). Anything
carrying ``external-source=capsync`` was written by a capsync and is never read back:
two capsyncs must not feed each other.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal
from urllib.parse import quote

from pydantic import Field

from config.errors import CapsyncError, SourceError
from config.settings import SourceName, SourceSettingsBase
from discovery import codec, full_entry, seed_json
from discovery.consul import catalog_watch, checks
from discovery.consul.client import ConsulClient
from discovery.consul.fields import entry_from_service
from discovery.health import Health
from discovery.kinds import BuildContext, Kind
from discovery.model import CATEGORIES
from discovery.sources.base import Declaration, Listing, from_text, watch_failed

PAUSE = 5.0  # seconds between attempts while Consul does not answer


@dataclass
class ConsulSource:
    client: ConsulClient
    name: str = "consul"
    services: builtins.list[str] = field(default_factory=builtins.list)
    tag: str | None = None
    meta_key: str = "worker-capabilities"

    # The last listing and what it was read at: (service, X-Consul-Index of its
    # instances, of its checks) per service.
    _last: tuple[tuple[tuple[str, int, int], ...], Listing] | None = field(default=None, repr=False)

    def list(self) -> Listing:
        """Every read must be a clean answer (ConsulClient.read): a rate limit or a
        proxy's page raises SourceError, so the source's entries freeze, never empty.

        While Consul's indexes of every listed service and of its checks are where they
        were when they were last read (asked with filters nothing matches, so the
        answers hold none), the same Listing object is handed back: nothing is read,
        decoded or walked again."""
        names = self._service_names()
        params = {"tag": self.tag} if self.tag else {}
        if self._last is not None and [name for name, *_ in self._last[0]] == names:
            now = tuple(self._indexes(name, params) for name in names)
            if now == self._last[0]:
                return self._last[1]
        listing, read_at = Listing(), []
        for service in names:
            path = _path(service)
            # Asked before the checks are read: a check changed in between moves it, so
            # the next cycle reads again.
            checked = self._checks_index(service)
            instances, index = self.client.read(path, list, params=params)
            read_at.append((service, index, checked))
            found = Listing()
            for instance in instances:
                self._add(found, instance, path)
            if found.declarations:
                health = self._health(service)
                found.declarations = [
                    replace(d, health=health[d.ref.casefold()]) if d.ref.casefold() in health else d
                    for d in found.declarations
                ]
            listing.extend(found)
        self._last = (tuple(read_at), listing)
        return listing

    def _health(self, service: str) -> dict[str, Health]:
        """The service's checks, as each instance's health (node checks are not read)."""
        return checks.instances(checks.read(self.client, _checks_path(service)))

    def _indexes(self, service: str, params: dict[str, str]) -> tuple[str, int, int]:
        """Consul's index of the service's instances and of its checks now."""
        probe = {**params, "filter": NO_INSTANCE}
        index = self.client.read(_path(service), list, params=probe)[1]
        return service, index, self._checks_index(service)

    def _checks_index(self, service: str) -> int:
        return self.client.read(_checks_path(service), list, params={"filter": NO_CHECK})[1]

    def watch(self, notify: Callable[[str], None], stop: threading.Event) -> None:
        """A blocking query on the catalogue; notify when what we would list changed.

        capsync's own writes move the catalogue's index too, so the listing itself is
        compared, not the index: our writes do not wake a sync of their own. The query is
        the endpoint's shared one (discovery/consul/catalog_watch.py): with the Consul
        registry's liveness watch on the same endpoint, one blocking query serves both.
        """
        index, seen, logged = 0, "", -PAUSE
        with catalog_watch.follow(self.client.endpoint, PAUSE) as answers:
            for answer in catalog_watch.answers_until(answers, stop):
                try:
                    if isinstance(answer, Exception):
                        raise answer
                    moved, index = answer != index, answer
                    current = _fingerprint(self.list()) if moved or not seen else seen
                except CapsyncError as exc:
                    # Followed with others, the query may retry sooner: one line per PAUSE.
                    if time.monotonic() - logged >= PAUSE:
                        logged = time.monotonic()
                        watch_failed(self.name, str(exc), PAUSE)
                    continue
                if seen and current != seen:
                    notify(f"consul catalogue changed (index {index})")
                seen = current

    def close(self) -> None:
        self.client.close()

    def _service_names(self) -> builtins.list[str]:
        if self.services:
            return self.services
        body, _ = self.client.read("/v1/catalog/services", dict)
        if not all(isinstance(tags, list | None) for tags in body.values()):
            raise SourceError(
                f"source {self.name}: Consul answered GET /v1/catalog/services "
                "with tags that are not lists"
            )
        return sorted(
            name for name, tags in body.items() if not self.tag or self.tag in (tags or ())
        )

    def _add(self, listing: Listing, instance: Any, path: str) -> None:
        try:
            entry = entry_from_service(instance)
        except ValueError as exc:
            raise SourceError(
                f"source {self.name}: Consul answered GET {path} with an "
                f"instance of the wrong shape: {exc}"
            ) from None
        if entry.meta.get(codec.EXTERNAL_SOURCE) == "capsync":
            return
        meta = entry.meta
        ref = f"{instance.get('Node')}/{entry.id}"
        address = entry.address or instance.get("Address") or ""
        if self.meta_key in meta:
            listing.declarations.append(
                from_text(
                    self.name,
                    ref,
                    meta[self.meta_key],
                    default_id=entry.id,
                    address=address,
                )
            )
        elif any(k in CATEGORIES or k.startswith(codec.FLAG_PREFIX) for k in meta):
            # The registry encoding: its meta and tags are the raw text (as one text, so
            # a later process may reuse its validation too).
            listing.declarations.append(
                Declaration(
                    self.name,
                    ref,
                    None,
                    default_id=entry.id,
                    address=address,
                    fingerprint=json.dumps([sorted(entry.meta.items()), entry.tags]),
                    reload=partial(_decoded, entry),
                )
            )


# Filters no catalogue instance and no check match: the answer carries only the index.
NO_INSTANCE = 'ServiceID == "" and ServiceID != ""'
NO_CHECK = 'CheckID == "" and CheckID != ""'


def _path(service: str) -> str:
    return f"/v1/catalog/service/{quote(service)}"


def _checks_path(service: str) -> str:
    return f"/v1/health/checks/{quote(service)}"


def _decoded(entry: codec.Entry) -> Any:
    return seed_json.to_seed(full_entry.decode(entry))


def _fingerprint(listing: Listing) -> str:
    items: list[Any] = [
        (d.ref, d.fingerprint, d.address, d.health.status) for d in listing.declarations
    ]
    items += [(e.ref, e.problems) for e in listing.invalid]
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()


class ConsulSourceSettings(SourceSettingsBase):
    """Services others registered in Consul (the [consul] connection is used)."""

    type: Literal["consul"]
    name: SourceName = "consul"
    services: builtins.list[str] = Field(default_factory=builtins.list)
    tag: str | None = None
    meta_key: str = "worker-capabilities"


def parse_arg(value: str) -> dict[str, object]:
    """``SERVICE[,SERVICE...]`` or ``tag=TAG``."""
    if value.startswith("tag="):
        return {"tag": value.removeprefix("tag=")}
    if not value:
        raise ValueError("services or tag missing")
    return {"services": value.split(",")}


def build(settings: ConsulSourceSettings, ctx: BuildContext) -> ConsulSource:
    client = ConsulClient(ctx.consul_endpoint(), error=SourceError)
    return ConsulSource(
        client,
        name=settings.name,
        services=builtins.list(settings.services),
        tag=settings.tag,
        meta_key=settings.meta_key,
    )


KIND = Kind("consul", ConsulSourceSettings, "SERVICE[,SERVICE]|tag=TAG", parse_arg, build)
