"""Settings -> live objects: the registries and the sources, built through the kind tables."""

from __future__ import annotations

from pathlib import Path

from config.errors import ConfigError
from config.settings import ConsulSettings, RegistrySettingsBase, Settings
from daemon.cycle import RegistrySync, SyncOptions
from daemon.plan import DeletionGuard
from daemon.registry.base import Registry
from daemon.registry.table import REGISTRY_KINDS
from discovery.consul_client import ConsulEndpoint
from discovery.kinds import BuildContext
from discovery.sources.base import Source
from discovery.sources.table import SOURCE_KINDS


def consul_endpoint(settings: ConsulSettings) -> ConsulEndpoint:
    token = settings.token.get_secret_value() if settings.token else None
    if settings.token_file is not None:
        token = _read_token(settings.token_file)
    verify: bool | str = str(settings.ca_file) if settings.ca_file else settings.ssl_verify
    if not settings.ssl_verify:
        verify = False
    cert = (
        (str(settings.cert_file), str(settings.key_file))
        if settings.cert_file and settings.key_file
        else None
    )
    return ConsulEndpoint(
        address=settings.address, token=token or None, scheme=settings.scheme, verify=verify,
        cert=cert, datacenter=settings.datacenter, timeout=settings.timeout,
    )


def sync_options(reg: RegistrySettingsBase) -> SyncOptions:
    return SyncOptions(
        service=reg.service, owner=reg.owner, policy=reg.policy,
        guard=DeletionGuard(reg.max_delete_fraction, reg.max_delete_count,
                            reg.allow_mass_delete, reg.guard_window),
        release_file=reg.release_file,
    )


def build_context(settings: Settings) -> BuildContext:
    return BuildContext(settings.consul, lambda: consul_endpoint(settings.consul),
                        leader_election=settings.daemon.leader_election,
                        takeover=settings.daemon.leader_election)


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
        for target in built:
            target.registry.close()
        raise
    return built


def build_sources(settings: Settings) -> list[Source]:
    ctx = build_context(settings)
    try:
        return [SOURCE_KINDS.create(source, ctx) for source in settings.sources]
    except ImportError as exc:
        raise ConfigError(str(exc)) from None


def _read_token(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"consul.token_file {path}: {exc.strerror}") from None
