"""Settings from a TOML file, Consul's environment conventions, and command-line overrides.

Precedence, lowest first: built-in defaults, the TOML file, the environment (CONSUL_* as
Consul's CLI reads them, then CAPSYNC_<SECTION>__<KEY>), then command-line options.
Every error names its key path.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from config.errors import ConfigError
from config.settings import RegistrySettingsBase, Settings, registry_list, state_files

DEFAULT_PATH = Path("/etc/capsync/capsync.toml")

# CONSUL_* variable -> key under [consul]; the same names Consul's own CLI reads.
CONSUL_ENV = {
    "CONSUL_HTTP_ADDR": "address",
    "CONSUL_HTTP_TOKEN": "token",
    "CONSUL_HTTP_TOKEN_FILE": "token_file",
    "CONSUL_CACERT": "ca_file",
    "CONSUL_CLIENT_CERT": "cert_file",
    "CONSUL_CLIENT_KEY": "key_file",
    "CONSUL_HTTP_SSL_VERIFY": "ssl_verify",
}


@dataclass(frozen=True)
class Overrides:
    """What the command line replaces: settings per section (``registry`` applies to
    every registry), and the whole list of sources or of registries."""

    sections: Mapping[str, Mapping[str, Any]] = dataclass_field(default_factory=dict)
    sources: list[dict[str, Any]] | None = None
    registries: list[dict[str, Any]] | None = None


def load(
    model: type[Settings],
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Overrides | None = None,
) -> Settings:
    """Load settings into ``model`` (the Settings derived from the kind tables). Without
    ``path`` the default file (CAPSYNC_CONFIG, else /etc/capsync/capsync.toml) is read if
    it exists.

    ``overrides.sections["registry"]`` applies to every registry; ``registries`` replaces the
    configured ones, each taking the common settings (owner, service, policy...) of the
    first configured registry. This is the one place that reads the environment: each
    section, source and registry is handed the variables it declares (``environment``)
    and its files in systemd's ``$STATE_DIRECTORY``."""
    environ = os.environ if environ is None else environ
    default = Path(environ.get("CAPSYNC_CONFIG") or DEFAULT_PATH)
    data = _read_toml(path if path is not None else default, required=path is not None)
    data = _with_environment(data, environ)
    single = isinstance(data.get("registry"), dict)
    try:
        data = registry_list(data)
    except ValueError as exc:
        raise ConfigError(f"{_where(path)}: {exc}") from None
    overrides = overrides or Overrides()
    data = _with_overrides(data, overrides)
    data = _with_declared_environment(model, data, environ)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            _describe(exc, path, single=single and overrides.registries is None)
        ) from None


def _with_environment(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """CONSUL_* as Consul's CLI reads them, then CAPSYNC_<SECTION>__<KEY>: both over the
    TOML file."""
    data = dict(data)
    consul = dict(data.get("consul") or {})
    for variable, key in CONSUL_ENV.items():
        if environ.get(variable):
            consul[key] = environ[variable]
    if environ.get("CONSUL_HTTP_SSL") == "true":
        consul["scheme"] = "https"
    if consul.get("token") and consul.get("token_file"):
        # The environment's choice wins over the file's, as in Consul's CLI.
        consul.pop("token_file" if environ.get("CONSUL_HTTP_TOKEN") else "token")
    data["consul"] = consul
    for variable, value in environ.items():
        section, sep, key = variable.removeprefix("CAPSYNC_").lower().partition("__")
        if variable.startswith("CAPSYNC_") and sep and section not in ("sources", "registries"):
            data.setdefault(section, {})[key] = _env_value(value)
    return data


def _with_overrides(data: dict[str, Any], overrides: Overrides) -> dict[str, Any]:
    """The command line's options, over everything else."""
    sections = dict(overrides.sections)
    if overrides.registries is not None:
        common = _common(data["registries"])
        data["registries"] = [{**common, **r} for r in overrides.registries]
    every = sections.pop("registry", {})
    if isinstance(data["registries"], list):
        data["registries"] = [
            {**r, **every} if isinstance(r, dict) else r for r in data["registries"]
        ]
    for section, values in sections.items():
        data[section] = {**(data.get(section) or {}), **values}
    if overrides.sources is not None:
        data["sources"] = overrides.sources
    return data


def _with_declared_environment(
    model: type[Settings], data: dict[str, Any], environ: Mapping[str, str]
) -> dict[str, Any]:
    """Each settings model's ``environment`` (field -> variable): the field's value when
    nothing else set it, and so is ``$STATE_DIRECTORY`` for its state files. So a kind is
    handed ``REDIS_URL`` or ``KUBECONFIG`` with its settings instead of reading the
    environment itself."""
    for name, field in model.model_fields.items():
        value = data.get(name)
        members = _members(field.annotation)
        if isinstance(value, list):
            data[name] = [_fill(_member(members, item), item, environ) for item in value]
        elif len(members) == 1 and (value is None or isinstance(value, dict)):
            filled = _fill(members[0], value or {}, environ)
            if filled:
                data[name] = filled
    return data


def with_environment(
    model: type[BaseModel], given: Mapping[str, Any], *, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A command's options for ``model`` (not the daemon's file), with the variables the
    model declares for what the command line leaves unset."""
    filled: dict[str, Any] = _fill(model, dict(given), os.environ if environ is None else environ)
    return filled


def _fill(member: type[BaseModel] | None, table: Any, environ: Mapping[str, str]) -> Any:
    if member is None or not isinstance(table, dict):
        return table
    declared = getattr(member, "environment", {})
    found = {key: environ[var] for key, var in declared.items() if environ.get(var)}
    # systemd's $STATE_DIRECTORY (the first, when it lists several) holds the state files.
    if directory := environ.get("STATE_DIRECTORY", "").split(":")[0]:
        found |= {key: str(Path(directory, name)) for key, name in state_files(member).items()}
    return {**found, **table}


def _members(annotation: Any) -> list[type[BaseModel]]:
    """The settings models an annotation names (a list of a union of kinds included)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _members(arg)]


def _member(members: list[type[BaseModel]], item: Any) -> type[BaseModel] | None:
    """The kind an item of ``sources`` or ``registries`` is, by its ``type`` or ``backend``."""
    if not isinstance(item, dict):
        return None
    for member in members:
        for key in ("type", "backend"):
            field = member.model_fields.get(key)
            if field is not None and get_args(field.annotation) == (item.get(key),):
                return member
    return None


def _common(configured: list[Any]) -> dict[str, Any]:
    first = configured[0] if configured and isinstance(configured[0], dict) else {}
    shared = RegistrySettingsBase.model_fields.keys() - {"backend", "name"}
    return {key: value for key, value in first.items() if key in shared}


def _env_value(value: str) -> Any:
    """``true``, ``30``, ``0.5`` and ``["a", "b"]`` mean what they mean in TOML; anything
    else is a plain string."""
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def _read_toml(path: Path, *, required: bool) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file {path} does not exist") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path}: not UTF-8 (byte {exc.start}: {exc.reason}); TOML files are UTF-8"
        ) from None


def _where(path: Path | None) -> str:
    return f"config {path}" if path else "config"


def _describe(exc: ValidationError, path: Path | None, *, single: bool) -> str:
    where = _where(path)
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        if len(loc) > 2 and loc[0] in ("sources", "registries") and isinstance(loc[1], int):
            del loc[2]  # pydantic names the union member ("file"); the index says enough
        if single and loc[:2] == ["registries", 0]:
            loc[:2] = ["registry"]  # named as the user wrote it: one [registry] table
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {key}: {msg}" if key else f"{where}: {msg}")
    return "\n".join(lines)
