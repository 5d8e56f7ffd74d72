"""The model that validates a configuration: config's generic ``Settings`` with the
source and registry unions derived from the kind tables, and the daemon's own sections
(the front ends' from their table, the event publisher's) after ``[daemon]``."""

from __future__ import annotations

from typing import cast

from pydantic import create_model

from config.settings import Head, Section, Settings
from daemon.amqp_events_settings import AmqpEventsSettings
from daemon.front_ends import FRONT_ENDS, SHARED
from daemon.registry.table import REGISTRY_KINDS
from discovery.sources.table import SOURCE_KINDS

# The shared [api] first, then the others by name: the order `config check` shows and
# the errors come in.
_OWN: set[type[Section]] = {AmqpEventsSettings}
_OWN.update(section for kind in FRONT_ENDS.values() for section in kind.sections)
SECTIONS: tuple[type[Section], ...] = (*SHARED, *sorted(_OWN, key=lambda m: m.section))

# Settings and DaemonSections both derive from Head, so the fields come in the order
# [daemon], the daemon's own sections, then Settings' (the registries, [consul], sources).
DaemonSections: type[Head] = create_model(
    "DaemonSections",
    __base__=Head,
    **{model.section: (model, model()) for model in SECTIONS},  # type: ignore[call-overload]
)
_BASES: tuple[type[Head], ...] = (Settings, DaemonSections)

# Settings comes first among the bases, so the model is a Settings.
SETTINGS = cast(
    type[Settings],
    create_model(
        "Settings",
        __base__=_BASES,
        registries=(REGISTRY_KINDS.settings_list(), ...),
        sources=(SOURCE_KINDS.settings_list(), []),
    ),
)
