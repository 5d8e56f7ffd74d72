"""Settings -> live objects: the registry and the sources, chosen by explicit name tables."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from config.errors import ConfigError, SourceError
from config.events import emit
from config.settings import ConsulSettings, Settings, check_token
from daemon.cycle import SyncOptions
from daemon.plan import DeletionGuard
from daemon.registry.base import Registry
from daemon.registry.consul import ConsulRegistry
from daemon.registry.sqlite import SqliteRegistry
from discovery.consul_client import ConsulClient, ConsulEndpoint
from discovery.documents import read_bounded
from discovery.sources.base import Source
from discovery.sources.consul import ConsulSource
from discovery.sources.docker import DockerSource
from discovery.sources.file import FileSource
from discovery.sources.swarm import SwarmSource

TOKEN_FILE_LIMIT = 4096  # an ACL token is a 36-character UUID; anything huge is a mistake


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


def _file(source: Any, settings: Settings) -> Source:
    return FileSource(source.path, name=source.name)


def _engine(kind: type[DockerSource | SwarmSource]) -> Callable[[Any, Settings], Source]:
    return lambda source, settings: kind(name=source.name, label=source.label,
                                         base_url=source.host)


def _kubernetes(source: Any, settings: Settings) -> Any:
    # Imported here: the kubernetes client is an optional extra. Typed Any until the
    # kubernetes source implements Source.close (its owner adds it).
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
    """Every configured source; if one cannot be built, those built before it are
    closed again."""
    built: list[Source] = []
    try:
        for source in settings.sources:
            built.append(SOURCE_BUILDERS[source.type](source, settings))
    except BaseException as exc:
        close_all(built)
        if isinstance(exc, ImportError):
            raise ConfigError(str(exc)) from None
        raise
    return built


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
            emit(logging.WARNING, "close_failed", part=type(part).__name__,
                 error=f"{type(exc).__name__}: {exc}")


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
    """``--registry consul`` or ``--registry sqlite:PATH`` -> [registry] keys."""
    if arg == "consul":
        return {"backend": "consul"}
    kind, _, path = arg.partition(":")
    if kind == "sqlite" and path:
        return {"backend": "sqlite", "path": path}
    raise ConfigError(f"--registry {arg!r}: expected 'consul' or 'sqlite:PATH'")


def _read_token(path: Path) -> str:
    where = f"consul.token_file {path}"
    try:
        raw = read_bounded(path, TOKEN_FILE_LIMIT)
        if len(raw) > TOKEN_FILE_LIMIT:
            raise ConfigError(f"{where}: larger than {TOKEN_FILE_LIMIT} bytes; it should "
                              "hold only the token")
        token = raw.decode("utf-8").strip()
        return check_token(token, "the token")
    except OSError as exc:
        raise ConfigError(f"{where}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8; a token is printable ASCII") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
