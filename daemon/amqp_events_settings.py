"""The ``[amqp_events]`` section: the change-event publisher's broker, exchange and outbox.

Beside daemon/amqp_events.py, as each front end's section is beside its front end: the
settings model (daemon/settings_model.py) takes it from here without the publisher's
outbox, bus and connection code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import Field

from config.settings import AmqpConnection, in_state_directory


class AmqpEventsSettings(AmqpConnection):
    """The change-event publisher: every created, updated or deleted entry to a durable
    topic exchange, through a bounded durable outbox (oldest dropped, and reported, when
    full)."""

    section: ClassVar[str] = "amqp_events"

    enabled: bool = False
    exchange: str = Field("worker.capabilities.events", min_length=1, max_length=255)
    outbox: Path = in_state_directory("amqp-outbox.db")
    outbox_max: Annotated[int, Field(ge=10)] = 100_000
