"""The settings schema: every option capsync has, its default, and its rule.

Validated once at load time so that a bad setting fails start-up (or a reload) with its
key path, never in the middle of a cycle.
"""

from __future__ import annotations

import math
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


STATE_DIRECTORY = Path("/var/lib/capsync")


def in_state_directory(name: str) -> Any:
    """A ``Field`` whose default is the file ``name`` in the state directory:
    /var/lib/capsync, or systemd's ``$STATE_DIRECTORY``, which config/loading.py hands
    over as the field's value (``state_files`` finds these fields)."""
    return Field(STATE_DIRECTORY / name, json_schema_extra={"state_file": name})


def state_files(model: type[BaseModel]) -> dict[str, str]:
    """The fields of ``model`` that default to a file in the state directory: field ->
    file name."""
    return {
        key: str(extra["state_file"])
        for key, field in model.model_fields.items()
        if isinstance(extra := field.json_schema_extra, dict) and "state_file" in extra
    }


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


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    # field -> environment variable: the field's value when neither the file, CAPSYNC_*
    # nor the command line set it. config/loading.py reads them; nothing else does.
    environment: ClassVar[Mapping[str, str]] = {}
    # The [table] a section of the daemon's own (a front end's, the event publisher's) is
    # read from: the derived model holds it under this name.
    section: ClassVar[str] = ""

    @classmethod
    def of(cls, settings: BaseModel) -> Self:
        """This section of a configuration validated by the derived model."""
        section = getattr(settings, cls.section, None)
        if not isinstance(section, cls):
            raise TypeError(f"the settings have no [{cls.section}] {cls.__name__}")
        return section


class CertPair(Section):
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


class RegistrySettingsBase(Section):
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


class SourceSettingsBase(Section):
    """What every source kind shares; each kind's module adds its own fields and narrows
    ``type`` to its name (discovery/sources/table.py lists them)."""

    type: str
    name: SourceName


class DaemonSettings(Section):
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
    # What was validated, kept for the next process (`run --once`, a restart): a file in
    # the state directory, or "off".
    validations: Path | Literal["off"] = in_state_directory("validations.cache")

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return host_port(value, "127.0.0.1:9469")


def host_port(value: str, example: str) -> str:
    if value != "off":
        _, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"must be HOST:PORT (e.g. {example}) or 'off'")
    return value


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


class Head(Section):
    """What every configuration starts with: ``[daemon]``. The sections of the daemon's
    own parts (the front ends, the event publisher) follow it, then ``Settings``'s:
    daemon/settings_model.py derives both from this head, so that order is kept."""

    daemon: DaemonSettings = DaemonSettings()


class Settings(Head):
    """The generic shape; the model that validates a real configuration is derived from
    the kind tables (daemon/settings_model.py), which add the sources' and registries'
    models and the daemon's own sections (``[api]``, ``[grpc]``, ``[amqp_events]``)."""

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
