"""Structured log events: an event name plus key=value fields, one line each.

Any layer may emit; daemon.logs decides how lines look (text or JSON). Never pass a secret
as a field.
"""

from __future__ import annotations

import logging
from typing import Any

LOGGER = logging.getLogger("capsync")


def emit(level: int, event: str, **fields: Any) -> None:
    LOGGER.log(level, event, extra={"fields": fields})
