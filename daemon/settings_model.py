"""The model that validates a configuration: config's generic ``Settings`` with the
source and registry unions derived from the kind tables."""

from __future__ import annotations

from pydantic import create_model

from config.settings import Settings
from daemon.registry.table import REGISTRY_KINDS
from discovery.sources.table import SOURCE_KINDS

SETTINGS: type[Settings] = create_model(
    "Settings",
    __base__=Settings,
    registries=(REGISTRY_KINDS.settings_list(), ...),
    sources=(SOURCE_KINDS.settings_list(), []),
)
