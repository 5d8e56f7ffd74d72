"""One rule for every secret file the settings name (config/secrets.py), proved through
the CLI for each of them: a missing, empty, oversized or (for text) non-UTF-8 file stops
the daemon at start with one line naming the setting and the path, and never the secret.

``SECRET_FILES`` is the table; ``test_every_secret_setting_is_in_the_table`` walks the
settings model so a new ``*_file`` secret cannot be added without its line here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from config.secrets import SECRET_LIMIT, read_secret
from config.settings import CertPair
from daemon.settings_model import SETTINGS
from tests.conftest import run_cli
from tests.test_sync_contract import EXAMPLES

SECRET_NAMES = ("password_file", "token_file")  # and gRPC's key_file, read by capsync


def _toml(section: str, table: dict[str, Any]) -> str:
    body = "\n".join(f"{key} = {json.dumps(value)}" for key, value in table.items())
    return f"[{section}]\n{body}\n"


@dataclass(frozen=True)
class SecretFile:
    """A setting that names a secret file, and how a user points it at ``path``: the
    configuration file's text, the environment, and the daemon's arguments."""

    field: str  # the settings model and field, as test_every_secret_setting_... finds it
    key: str  # how errors name it
    text: bool  # a token or password (UTF-8 rule), not a PEM key
    config: Callable[[Path, Path], str] = lambda path, tmp: ""
    env: Callable[[Path], dict[str, str]] = lambda path: {}
    once: bool = False  # read by ``run --once`` (a source, a registry), not only by the daemon
    own_registry: bool = False  # the configuration names the registry that reads it
    own_source: bool = False  # the configuration names the source that reads it

    def run(self, path: Path, tmp: Path) -> Any:
        config = tmp / "capsync.toml"
        config.write_text(self.config(path, tmp))
        args = ["--config", str(config)]
        if not self.own_registry:
            args += ["--registry", f"sqlite:{tmp / 'registry.db'}"]
        if not self.own_source:
            args += ["--source", f"file:{EXAMPLES}"]
        args += ["--once"] if self.once else ["--listen", "off"]
        return run_cli("run", *args, env=self.env(path), timeout=30)


_CONSUL_REGISTRY = '[[registries]]\nbackend = "consul"\n'


def _registry(backend: str, url: str, path: Path) -> str:
    """A registry on a closed port: the secret is read (and refused) before any connection."""
    table = {"backend": backend, "url": url, "password_file": str(path)}
    return "[[registries]]\n" + _toml("x", table).split("\n", 1)[1]


def _amqp_source(path: Path, tmp: Path) -> str:
    table = {"type": "amqp", "password_file": str(path), "path": str(tmp / "inbox.db")}
    return "[[sources]]\n" + _toml("x", table).split("\n", 1)[1]


SECRET_FILES = [
    SecretFile(
        "ApiSettings.token_file",
        "api.token_file",
        True,
        lambda p, t: _toml("api", {"token_file": str(p)}),
    ),
    SecretFile(
        "AmqpEventsSettings.password_file",
        "amqp.password_file",
        True,
        lambda p, t: _toml(
            "amqp_events",
            {"enabled": True, "password_file": str(p), "outbox": str(t / "outbox.db")},
        ),
    ),
    SecretFile(
        "AmqpSourceSettings.password_file",
        "amqp.password_file",
        True,
        _amqp_source,
        once=True,
        own_source=True,
    ),
    SecretFile(
        "RedisRegistrySettings.password_file",
        "registry.password_file",
        True,
        lambda p, t: _registry("redis", "redis://127.0.0.1:1/0", p),
        once=True,
        own_registry=True,
    ),
    SecretFile(
        "PostgresRegistrySettings.password_file",
        "registry.password_file",
        True,
        lambda p, t: _registry("postgres", "host=127.0.0.1 port=1", p),
        once=True,
        own_registry=True,
    ),
    SecretFile(
        "ConsulSettings.token_file",
        "consul.token_file",
        True,
        lambda p, t: _toml("consul", {"token_file": str(p)}) + _CONSUL_REGISTRY,
        once=True,
        own_registry=True,
    ),
    SecretFile(
        "GrpcSettings.key_file",
        "grpc.key_file",
        False,
        lambda p, t: _toml(
            "grpc", {"listen": "127.0.0.1:0", "cert_file": str(p), "key_file": str(p)}
        ),
    ),
]


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models(arg)]


def _fields(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    """``Model.field`` for every field of the settings tree, sources and registries too."""
    if model in seen:
        return set()
    seen.add(model)
    found = {f"{model.__name__}.{name}" for name in model.model_fields}
    for field in model.model_fields.values():
        for inner in _models(field.annotation):
            found |= _fields(inner, seen)
    return found


def test_every_secret_setting_is_in_the_table() -> None:
    fields = _fields(SETTINGS, set())
    secrets = {f for f in fields if f.rpartition(".")[2] in SECRET_NAMES}
    assert secrets | {"GrpcSettings.key_file"} == {s.field for s in SECRET_FILES}


def _all_models() -> list[type[BaseModel]]:
    """Every settings model that names a cert_file."""
    seen: set[type[BaseModel]] = set()
    _fields(SETTINGS, seen)
    named = [m for m in seen if "cert_file" in m.model_fields]
    return sorted(named, key=lambda m: m.__name__)


def _required(model: type[BaseModel]) -> dict[str, Any]:
    """The required fields (a kind's ``type`` literal) at their one allowed value."""
    return {
        name: field.annotation.__args__[0]  # type: ignore[union-attr]
        for name, field in model.model_fields.items()
        if field.is_required()
    }


@pytest.mark.parametrize("model", _all_models(), ids=lambda m: m.__name__)
def test_cert_and_key_go_together_in_every_section(model: type[BaseModel]) -> None:
    """Every settings model naming a cert_file derives the one TLS piece, whose rule holds."""
    assert issubclass(model, CertPair), model
    with pytest.raises(ValidationError, match="cert_file and key_file go together"):
        model.model_validate({**_required(model), "cert_file": "/c.pem"})


@pytest.mark.parametrize("secret", SECRET_FILES, ids=lambda s: s.field)
@pytest.mark.parametrize("case", ["missing", "empty", "oversized", "not_utf8"])
def test_a_bad_secret_file_stops_the_start_naming_it(
    secret: SecretFile, case: str, tmp_path: Path
) -> None:
    path = tmp_path / "secret"
    if case == "not_utf8" and not secret.text:
        case = "empty"  # a PEM key is bytes: the UTF-8 rule is for tokens and passwords
    raw = {"empty": b" \n", "oversized": b"s" * (SECRET_LIMIT + 1), "not_utf8": b"\xff\xfe"}
    if case != "missing":
        path.write_bytes(raw[case])
    expected = {
        "missing": "No such file or directory",
        "empty": "the file is empty",
        "oversized": f"larger than {SECRET_LIMIT} bytes",
        "not_utf8": "not UTF-8",
    }[case]
    result = secret.run(path, tmp_path)
    assert result.returncode == 2, result
    assert f"{secret.key} {path}: {expected}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "sss" not in result.stderr


def test_a_secret_file_others_can_read_is_used_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "token"
    path.write_text("s3cret\n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert read_secret(path, "api.token_file") == "s3cret"
    (record,) = [r for r in caplog.records if r.getMessage() == "secret_file_readable"]
    assert record.fields == {"setting": "api.token_file", "path": path, "mode": "0644"}
    caplog.clear()
    path.chmod(0o600)
    assert read_secret(path, "api.token_file") == "s3cret"
    assert not [r for r in caplog.records if r.getMessage() == "secret_file_readable"]
