"""Front ends are plug-ins, like sources and registries: each is one module with a
``start``/``stop``/``status`` object, and one line in ``FRONT_ENDS`` below says when it
is on, its own settings sections (models beside it, importable without its extra), the
other settings it reads (a change to any needs a restart), how it is built
and which extra it needs. The settings model takes the sections from here
(daemon/settings_model.py). The daemon starts, reports and stops them in loops, with no
per-protocol branch.

Every front end is handed the same ``FrontEndContext``: the one ``Registrar`` (writes go
through ``discovery.intake`` and the lease rule), the daemon's state and metrics. The
rules they share (token, pacing, loopback-or-token) are ``daemon.front_rules``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from config.errors import ConfigError
from config.settings import Section, Settings
from daemon.api_settings import ApiSettings
from daemon.grpc_settings import GrpcSettings
from daemon.metrics import Metrics
from daemon.registrar import Registrar
from daemon.status import DaemonState


class FrontEnd(Protocol):
    address: str

    def start(self) -> FrontEnd: ...

    def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class FrontEndContext:
    settings: Settings
    state: DaemonState
    metrics: Metrics
    registrar: Registrar


@dataclass(frozen=True)
class FrontEndKind:
    """``module`` defines ``build(ctx) -> FrontEnd``; it is imported only when the front
    end is on, so its library can be an optional ``extra``. ``sections`` are its own
    settings sections, ``reads`` the other settings it takes; ``log_key`` names its
    address in the ``started`` event."""

    name: str
    module: str
    enabled: Callable[[Settings], bool]
    sections: tuple[type[Section], ...]
    reads: tuple[str, ...]
    log_key: str
    extra: str | None = None

    @property
    def settings_keys(self) -> tuple[str, ...]:
        """Every setting it reads, its own sections first."""
        return (*(section.section for section in self.sections), *self.reads)

    def build(self, ctx: FrontEndContext) -> FrontEnd:
        try:
            module = importlib.import_module(self.module)
        except ImportError as exc:
            if self.extra is None:
                raise
            raise ConfigError(
                f"{self.settings_keys[0]}: the {self.name} front end needs the "
                f"{self.extra!r} extra: pip install 'capsync[{self.extra}]' ({exc})"
            ) from None
        front_end: FrontEnd = module.build(ctx)
        return front_end


FRONT_ENDS: dict[str, FrontEndKind] = {
    kind.name: kind
    for kind in (
        FrontEndKind(
            "http",
            "daemon.http_api",
            lambda s: s.daemon.listen != "off",
            sections=(),
            reads=("daemon.listen", "api"),
            log_key="listen",
        ),
        FrontEndKind(
            "grpc",
            "daemon.grpc_api",
            lambda s: GrpcSettings.of(s).listen != "off",
            sections=(GrpcSettings,),
            reads=("api",),
            log_key="grpc",
            extra="grpc",
        ),
    )
}


# The section every front end reads (the write token, the lease, the limits), and the
# Registrar behind them all.
SHARED: tuple[type[Section], ...] = (ApiSettings,)

# Applied by a reload (SIGHUP) rather than needing a restart.
RELOADED = {"api": {"token_file"}}


def restart_needed(old: Settings, new: Settings, *also: str) -> list[str]:
    """The settings sections the front ends (and ``also``) read that differ between
    ``old`` and ``new``, leaving out what a reload applies (the token file)."""
    keys = dict.fromkeys(key for kind in FRONT_ENDS.values() for key in kind.settings_keys)
    return [key for key in [*keys, *also] if _view(old, key) != _view(new, key)]


def _view(settings: Settings, key: str) -> Any:
    value: Any = settings
    for part in key.split("."):
        value = getattr(value, part)
    if key in RELOADED:
        return value.model_dump(exclude=RELOADED[key])
    return value
