"""Settings -> live objects: the registries and the sources, built through the kind tables."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from typing import Protocol

from config.errors import ConfigError
from config.events import emit
from config.settings import ConsulSettings, RegistrySettingsBase, Settings
from daemon.plan import DeletionGuard
from daemon.registry.base import Registry
from daemon.registry.table import REGISTRY_KINDS
from daemon.registry_sync import RegistrySync, SyncOptions
from discovery.consul.client import ConsulEndpoint
from discovery.kinds import BuildContext
from discovery.normalise import Normaliser
from discovery.sources.base import Source
from discovery.sources.table import SOURCE_KINDS
from discovery.validations import Validations


def consul_endpoint(settings: ConsulSettings) -> ConsulEndpoint:
    verify: bool | str = str(settings.ca_file) if settings.ca_file else settings.ssl_verify
    if not settings.ssl_verify:
        verify = False
    return ConsulEndpoint(
        address=settings.address,
        token=settings.secret_token() or None,
        scheme=settings.scheme,
        verify=verify,
        cert=settings.cert_pair(),
        datacenter=settings.datacenter,
        timeout=settings.timeout,
    )


def sync_options(reg: RegistrySettingsBase) -> SyncOptions:
    return SyncOptions(
        service=reg.service,
        owner=reg.owner,
        policy=reg.policy,
        guard=DeletionGuard(
            reg.max_delete_fraction, reg.max_delete_count, reg.allow_mass_delete, reg.guard_window
        ),
        release_file=reg.release_file,
        unhealthy=reg.unhealthy,
    )


def build_context(settings: Settings) -> BuildContext:
    return BuildContext(
        settings.consul,
        lambda: consul_endpoint(settings.consul),
        leader_election=settings.daemon.leader_election,
        takeover=settings.daemon.leader_election,
    )


def build_registry(settings: Settings, reg: RegistrySettingsBase) -> Registry:
    return REGISTRY_KINDS.create(reg, build_context(settings))


def build_registries(settings: Settings) -> list[RegistrySync]:
    """One RegistrySync per configured registry; those built so far are closed when a
    later one cannot be built."""
    built: list[RegistrySync] = []
    try:
        for reg in settings.registries:
            built.append(RegistrySync(reg.name, build_registry(settings, reg), sync_options(reg)))
    except BaseException:
        close_all(target.registry for target in built)
        raise
    return built


def build_sources(settings: Settings, validations: Validations | None = None) -> list[Source]:
    """Every configured source; if one cannot be built, those built before it are
    closed again. ``validations``: what earlier processes validated (the Normaliser's),
    for a source that can then skip parsing what they did."""
    ctx = replace(build_context(settings), validations=validations)
    built: list[Source] = []
    try:
        for source in settings.sources:
            built.append(SOURCE_KINDS.create(source, ctx))
    except BaseException as exc:
        close_all(built)
        if isinstance(exc, ImportError):
            raise ConfigError(str(exc)) from None
        raise
    return built


def build_normaliser(settings: Settings) -> Normaliser:
    """Validation with its memory on disk (``daemon.validations``), unless that is off."""
    path = settings.daemon.validations
    return Normaliser(Validations(None if path == "off" else path))


class Closable(Protocol):
    def close(self) -> None: ...


def close_all(parts: Iterable[Closable | None]) -> None:
    """Close each part; one that fails to close is logged and the rest still close."""
    for part in parts:
        if part is None:
            continue
        try:
            part.close()
        except Exception as exc:  # closing must reach every part
            emit(
                logging.WARNING,
                "close_failed",
                part=type(part).__name__,
                error=f"{type(exc).__name__}: {exc}",
            )
