"""The settings schema: every option capsync has, its default, and its rule.

Validated once at load time so that a bad setting fails start-up (or a reload) with its
key path, never in the middle of a cycle.
"""

from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_serializer,
    field_validator,
    model_validator,
)

from config.errors import ConfigError
from config.secrets import read_secret

OWNER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SERVICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")


def default_writer() -> str:
    return socket.gethostname() or "localhost"


def default_owner() -> str:
    """The host name, shortened to a valid owner id (it names the synthetic node)."""
    name = socket.gethostname().split(".")[0] or "localhost"
    name = re.sub(r"[^A-Za-z0-9._-]", "-", name).lstrip("._-")[:64]
    return name or "localhost"


def state_path(name: str) -> Path:
    """A default file in the state directory: systemd's ``$STATE_DIRECTORY`` (the first,
    when it lists several) when set, else /var/lib/capsync."""
    directory = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(directory or "/var/lib/capsync") / name


def in_state_directory(name: str) -> Any:
    """A ``Field`` whose default is ``state_path(name)``, read when settings are built."""
    return Field(default_factory=lambda: state_path(name))


MAX_DURATION = 366 * 86400.0  # a year and a day: far beyond any sane interval, far inside
# what a timedelta, a timer or a Consul TTL can hold.
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> object:
    """``"90s"``, ``"5m"``, ``"1h30m"``, ``"500ms"`` or a number of seconds -> seconds."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    parts = _DURATION_RE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{value!r} is not a duration like 30s, 5m, 1h30m or 500ms")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def bounded_duration(value: float) -> float:
    if not math.isfinite(value) or value > MAX_DURATION:
        raise ValueError("is too large: a duration may be at most 366 days")
    return value


Duration = Annotated[
    float, BeforeValidator(parse_duration), Field(gt=0), AfterValidator(bounded_duration)
]


def check_token(value: str, where: str) -> str:
    """An ACL token travels in an HTTP header: visible ASCII only (no newline, no space,
    nothing a header cannot carry)."""
    for position, c in enumerate(value):
        if not "!" <= c <= "~":
            what = (
                "a line break"
                if c in "\r\n"
                else "a space"
                if c.isspace()
                else "a non-ASCII character"
                if ord(c) > 126
                else "a control character"
            )
            # The character itself is not shown: it is part of a secret.
            raise ValueError(
                f"{where} has {what} at position {position}: a token is "
                "printable ASCII without spaces or line breaks"
            )
    return value


def _matching(pattern: re.Pattern[str], value: str, rule: str) -> str:
    if not pattern.fullmatch(value):
        raise ValueError(f"must be {rule}")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    # field -> environment variable: the field's value when neither the file, CAPSYNC_*
    # nor the command line set it. config/loading.py reads them; nothing else does.
    environment: ClassVar[Mapping[str, str]] = {}


class CertPair(_Section):
    """A certificate and its private key (``cert_file``, ``key_file``): both or neither.
    Every setting that names such a pair (Consul, AMQP, gRPC, the Redis and PostgreSQL
    registries) derives from this, so the rule is checked here and nowhere else."""

    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self

    def cert_pair(self) -> tuple[str, str] | None:
        """The pair as the client libraries take it, or None when not set."""
        if self.cert_file is None or self.key_file is None:
            return None
        return str(self.cert_file), str(self.key_file)


class ClientTls(CertPair):
    """TLS to a server: the CA that signs it (``ca_file``) and an optional client pair."""

    ca_file: Path | None = None


class ConsulSettings(ClientTls):
    """How to reach Consul. Unset values come from Consul's own CONSUL_* variables."""

    address: str = "127.0.0.1:8500"
    token: SecretStr | None = None
    token_file: Path | None = None
    scheme: Literal["http", "https"] | None = None
    ssl_verify: bool = True
    datacenter: str | None = None
    timeout: Annotated[float, Field(gt=0, le=600)] = 10.0
    max_txn_ops: Annotated[int, Field(ge=1, le=128)] = 64
    # Consul's txn_max_req_len (512 KiB by default): a transaction body's byte limit.
    max_txn_bytes: Annotated[int, Field(ge=4096)] = 512 * 1024

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_token(value.get_secret_value(), "the token")
        return value

    @model_validator(mode="after")
    def _one_token(self) -> ConsulSettings:
        if self.token is not None and self.token_file is not None:
            raise ValueError("set token or token_file, not both")
        return self

    def secret_token(self) -> str | None:
        """The ACL token: ``token``, else ``token_file`` read by the one secret reader."""
        if self.token_file is None:
            return self.token.get_secret_value() if self.token else None
        where = f"consul.token_file {self.token_file}"
        try:
            return check_token(read_secret(self.token_file, "consul.token_file"), "the token")
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None


KindName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]


class RegistrySettingsBase(_Section):
    """What every registry kind shares; each kind's module adds its own fields and
    narrows ``backend`` to its name (daemon/registry/table.py lists them)."""

    backend: str
    name: KindName
    service: str = "worker"
    owner: str = Field(default_factory=default_owner)
    node: str | None = None
    node_address: str = "127.0.0.1"
    policy: Literal["sync", "upsert-only", "create-only"] = "sync"
    max_delete_fraction: Annotated[float, Field(ge=0, le=1)] = 0.5
    max_delete_count: Annotated[int, Field(ge=0)] = 5
    allow_mass_delete: bool = False
    # The deletion guard measures against the most entries owned within this window.
    guard_window: Duration = 3600.0
    # `touch` it to release held deletions for one cycle of a running daemon.
    release_file: Path = in_state_directory("release-deletions")
    # Critical workers: kept and marked (their health beside them), or withdrawn from the
    # registry until they recover.
    unhealthy: Literal["mark", "withdraw"] = "mark"
    # This host's identity in the node's meta: a second host writing the same owner's
    # service is refused (unless daemon.leader_election serialises them).
    writer: str = Field(default_factory=default_writer, min_length=1, max_length=255)

    @field_validator("owner")
    @classmethod
    def _owner(cls, value: str) -> str:
        return _matching(
            OWNER_RE,
            value,
            "1-64 characters of [A-Za-z0-9._-] starting with a "
            "letter or digit (it names the catalogue node)",
        )

    @field_validator("service")
    @classmethod
    def _service(cls, value: str) -> str:
        return _matching(
            SERVICE_RE,
            value,
            "1-63 characters of [A-Za-z0-9-] starting with a "
            "letter or digit (it is a DNS label: <tool>.<service>.service.consul)",
        )

    @property
    def node_name(self) -> str:
        return self.node or f"capsync-{self.owner}"


DEFAULT_LABEL = "worker.capabilities"
SourceName = KindName


class SourceSettingsBase(_Section):
    """What every source kind shares; each kind's module adds its own fields and narrows
    ``type`` to its name (discovery/sources/table.py lists them)."""

    type: str
    name: SourceName


class DaemonSettings(_Section):
    interval: Duration = 60.0
    min_gap: Duration = 1.0
    listen: str = "127.0.0.1:9469"
    log_format: Literal["text", "json"] = "text"
    leader_election: bool = False
    leader_key: str | None = None
    session_ttl: Annotated[Duration, Field(ge=10, le=86400)] = 15.0
    # The longest wait between retries of a failed cycle (never longer than interval).
    retry_max: Duration = 10.0
    # A worker's health is shown at least this long before it changes again (damping: a
    # flapping worker costs at most one health write per this time).
    # 0: no damping.
    health_min_time: Annotated[
        float,
        BeforeValidator(parse_duration),
        Field(ge=0, le=3600),
        AfterValidator(bounded_duration),
    ] = 10.0

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return _host_port(value, "127.0.0.1:9469")


def _host_port(value: str, example: str) -> str:
    if value != "off":
        _, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"must be HOST:PORT (e.g. {example}) or 'off'")
    return value


class ApiSettings(_Section):
    """The push and watch API on ``daemon.listen``: its token and its limits.

    Writes (register, delete, the WebSocket) need the bearer token read from
    ``token_file``, else from the systemd credential ``capsync-api-token``
    ($CREDENTIALS_DIRECTORY). Without a token, writes are open on a loopback listener and
    the daemon refuses to start on any other."""

    environment: ClassVar[Mapping[str, str]] = {"credentials_directory": "CREDENTIALS_DIRECTORY"}

    token_file: Path | None = None
    # systemd's $CREDENTIALS_DIRECTORY: where the capsync-api-token credential may be.
    credentials_directory: Path | None = Field(None, exclude=True)
    grace: Duration = 30.0
    max_ttl: Duration = 86400.0
    max_body: Annotated[int, Field(ge=1024, le=1 << 20)] = 64 * 1024
    max_connections: Annotated[int, Field(ge=1)] = 2048
    max_websockets: Annotated[int, Field(ge=1)] = 2000
    max_watchers: Annotated[int, Field(ge=1)] = 100
    max_messages: Annotated[int, Field(ge=1)] = 50
    ping_interval: Duration = 20.0
    watch_queue: Annotated[int, Field(ge=10)] = 1000
    # A connection whose request headers are not complete this long after it opened (or
    # after its previous response) is closed: idle peers cannot hold max_connections.
    header_timeout: Annotated[Duration, Field(le=300)] = 10.0


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***``: what logs and ``config check`` show."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


class AmqpConnection(ClientTls):
    """How to reach RabbitMQ: an ``amqp://`` or ``amqps://`` URL as pika reads it (user,
    host, port, vhost as the path, ``?heartbeat=30&connection_attempts=3&socket_timeout=10
    &blocked_connection_timeout=60``). ``password_file`` replaces the URL's password;
    ``ca_file`` and the client ``cert_file``/``key_file`` set up TLS for ``amqps``. The
    password is never logged nor shown by ``config check``."""

    url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    password_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("amqp://", "amqps://")):
            raise ValueError("must be an amqp:// or amqps:// URL")
        return value

    @field_serializer("url")
    def _redacted(self, value: str) -> str:
        return redact_url(value)


class AmqpEventsSettings(AmqpConnection):
    """The change-event publisher: every created, updated or deleted entry to a durable
    topic exchange, through a bounded durable outbox (oldest dropped, and reported, when
    full)."""

    enabled: bool = False
    exchange: str = Field("worker.capabilities.events", min_length=1, max_length=255)
    outbox: Path = in_state_directory("amqp-outbox.db")
    outbox_max: Annotated[int, Field(ge=10)] = 100_000


class GrpcSettings(CertPair):
    """The gRPC API (WorkerRegistry, health, reflection) on its own listener: off unless
    ``listen`` is set. It takes the ``[api]`` token (writes need it; without it the daemon
    refuses a listener that is not loopback) and limits (message size, grace, TTL). TLS
    with ``cert_file`` and ``key_file``; ``client_ca_file`` also requires every client to
    present a certificate signed by that CA. At most ``max_rpcs`` calls at once (streams
    included); one more is answered RESOURCE_EXHAUSTED. Long-lived calls that need no token
    (health ``Watch``, reflection) count under ``max_open_streams`` of their own, so they
    cannot take the calls ``Register`` needs."""

    listen: str = "off"
    client_ca_file: Path | None = None
    max_rpcs: Annotated[int, Field(ge=1, le=10_000)] = 256
    max_open_streams: Annotated[int, Field(ge=1, le=10_000)] = 16

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return _host_port(value, "127.0.0.1:9470")

    @model_validator(mode="after")
    def _tls(self) -> GrpcSettings:
        if self.client_ca_file is not None and self.cert_file is None:
            raise ValueError("client_ca_file needs cert_file and key_file (TLS)")
        return self


class Settings(_Section):
    """The generic shape; the model that validates a real configuration is derived from
    the kind tables (daemon/settings_model.py)."""

    daemon: DaemonSettings = DaemonSettings()
    api: ApiSettings = ApiSettings()
    amqp_events: AmqpEventsSettings = AmqpEventsSettings()
    grpc: GrpcSettings = GrpcSettings()
    registries: list[RegistrySettingsBase]
    consul: ConsulSettings = ConsulSettings()
    sources: list[SourceSettingsBase] = []

    @model_validator(mode="before")
    @classmethod
    def _registry_list(cls, data: object) -> object:
        return registry_list(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        if not self.registries:
            raise ValueError("registries: give at least one registry")
        for what, items in (("source", self.sources), ("registry", self.registries)):
            names = [item.name for item in items]
            if duplicates := sorted({n for n in names if names.count(n) > 1}):
                raise ValueError(f"{what} names must be unique (give each a name): {duplicates}")
        return self


DEFAULT_REGISTRY = "consul"


def registry_list(data: dict[str, Any]) -> dict[str, Any]:
    """``[registry]`` (one table, the original form) is a list of one ``[[registries]]``;
    neither means one Consul registry. A registry without ``backend`` is Consul, and
    its ``name`` defaults to its backend."""
    data = dict(data)
    single = data.pop("registry", None)
    many = data.get("registries")
    if single is not None and many is not None:
        raise ValueError(
            "give [registry] or [[registries]], not both (CAPSYNC_REGISTRY__* "
            "variables set [registry])"
        )
    tables = many if many is not None else [single if single is not None else {}]
    if isinstance(tables, list):
        tables = [_registry_defaults(t) if isinstance(t, dict) else t for t in tables]
    data["registries"] = tables
    return data


def _registry_defaults(table: dict[str, Any]) -> dict[str, Any]:
    backend = table.get("backend", DEFAULT_REGISTRY)
    return {"backend": backend, "name": backend, **table}
