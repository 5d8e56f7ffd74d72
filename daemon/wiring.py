"""Settings -> live objects: the registry and the sources, chosen by explicit name tables."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from config.errors import ConfigError, SourceError
from config.settings import ConsulSettings, RegistrySettings, Settings
from daemon.cycle import SyncOptions
from daemon.plan import DeletionGuard
from daemon.registry.base import Registry
from daemon.registry.consul import ConsulRegistry
from daemon.registry.sqlite import SqliteRegistry
from discovery.consul_client import ConsulClient, ConsulEndpoint
from discovery.sources.base import Source
from discovery.sources.consul import ConsulSource
from discovery.sources.docker import DockerSource
from discovery.sources.file import FileSource
from discovery.sources.swarm import SwarmSource


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


def sync_options(settings: Settings) -> SyncOptions:
    reg = settings.registry
    return SyncOptions(
        service=reg.service, owner=reg.owner, policy=reg.policy,
        guard=DeletionGuard(reg.max_delete_fraction, reg.max_delete_count,
                            reg.allow_mass_delete),
    )


def build_registry(settings: Settings) -> Registry:
    reg = settings.registry
    try:
        if reg.backend == "redis":
            return _redis(reg)
        if reg.backend == "postgres":
            return _postgres(reg)
    except ImportError as exc:
        raise ConfigError(str(exc)) from None
    if reg.backend == "sqlite":
        return SqliteRegistry(
            reg.path, service=reg.service, owner=reg.owner, node=reg.node_name,
            node_address=reg.node_address,
        )
    return ConsulRegistry(
        ConsulClient(consul_endpoint(settings.consul)),
        service=reg.service, owner=reg.owner, node=reg.node_name,
        node_address=reg.node_address, max_ops=settings.consul.max_txn_ops,
    )


def _redis(reg: RegistrySettings) -> Registry:
    # Imported here: redis-py is an optional extra.
    from daemon.registry.redis import RedisEndpoint, RedisRegistry, connect  # noqa: PLC0415

    url = reg.url or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    endpoint = RedisEndpoint(
        url=url, password_file=reg.password_file, ca_file=reg.ca_file, cert_file=reg.cert_file,
        key_file=reg.key_file, ssl_verify=reg.ssl_verify, timeout=reg.timeout,
    )
    return RedisRegistry(connect(endpoint), service=reg.service, owner=reg.owner,
                         prefix=reg.prefix)


def _postgres(reg: RegistrySettings) -> Registry:
    # Imported here: psycopg is an optional extra.
    from daemon.registry.postgres import PostgresEndpoint, PostgresRegistry  # noqa: PLC0415

    endpoint = PostgresEndpoint(
        dsn=reg.url or "", password_file=reg.password_file, sslmode=reg.sslmode,
        ca_file=reg.ca_file, cert_file=reg.cert_file, key_file=reg.key_file,
        timeout=reg.timeout,
    )
    return PostgresRegistry(endpoint, service=reg.service, owner=reg.owner,
                            schema=reg.schema_name)


def _file(source: Any, settings: Settings) -> Source:
    return FileSource(source.path, name=source.name)


def _engine(kind: type[DockerSource | SwarmSource]) -> Callable[[Any, Settings], Source]:
    return lambda source, settings: kind(name=source.name, label=source.label,
                                         base_url=source.host)


def _kubernetes(source: Any, settings: Settings) -> Source:
    # Imported here: the kubernetes client is an optional extra.
    from discovery.sources.kubernetes import KubernetesSource  # noqa: PLC0415

    return KubernetesSource(
        name=source.name, namespace=source.namespace, label_selector=source.label_selector,
        annotation=source.annotation, pods=source.pods, resources=source.resources,
        kubeconfig=source.kubeconfig, context=source.context,
    )


def _consul(source: Any, settings: Settings) -> Source:
    client = ConsulClient(consul_endpoint(settings.consul), error=SourceError)
    return ConsulSource(client, name=source.name, services=list(source.services),
                        tag=source.tag, meta_key=source.meta_key)


SOURCE_BUILDERS: Mapping[str, Callable[[Any, Settings], Source]] = {
    "file": _file,
    "docker": _engine(DockerSource),
    "swarm": _engine(SwarmSource),
    "kubernetes": _kubernetes,
    "consul": _consul,
}


def build_sources(settings: Settings) -> list[Source]:
    try:
        return [SOURCE_BUILDERS[source.type](source, settings) for source in settings.sources]
    except ImportError as exc:
        raise ConfigError(str(exc)) from None


def parse_source_arg(arg: str) -> dict[str, Any]:
    """``--source TYPE[:ARG]`` -> a [[sources]] table.

    file:DIR | docker[:HOST] | swarm[:HOST] | kubernetes[:NAMESPACE] |
    consul:SERVICE[,SERVICE...] | consul:tag=TAG
    """
    kind, _, value = arg.partition(":")
    table: dict[str, Any] = {"type": kind}
    if kind == "file" and value:
        table["path"] = value
    elif kind in ("docker", "swarm"):
        table.update({"host": value} if value else {})
    elif kind == "kubernetes":
        table.update({"namespace": value} if value else {})
    elif kind == "consul" and value.startswith("tag="):
        table["tag"] = value.removeprefix("tag=")
    elif kind == "consul" and value:
        table["services"] = value.split(",")
    else:
        raise ConfigError(
            f"--source {arg!r}: expected file:DIR, docker[:HOST], swarm[:HOST], "
            "kubernetes[:NAMESPACE], consul:SERVICE[,SERVICE] or consul:tag=TAG"
        )
    return table


def parse_registry_arg(arg: str) -> dict[str, Any]:
    """``--registry consul``, ``sqlite:PATH``, ``redis[:URL]`` or ``postgres[:DSN]``
    -> [registry] keys (without a URL: REDIS_URL, or libpq's PG* variables)."""
    if arg in ("consul", "redis", "postgres"):
        return {"backend": arg}
    kind, _, value = arg.partition(":")
    if kind == "sqlite" and value:
        return {"backend": "sqlite", "path": value}
    if kind in ("redis", "postgres") and value:
        return {"backend": kind, "url": value}
    raise ConfigError(f"--registry {arg!r}: expected 'consul', 'sqlite:PATH', "
                      "'redis[:URL]' or 'postgres[:DSN]'")


def _read_token(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"consul.token_file {path}: {exc.strerror}") from None
