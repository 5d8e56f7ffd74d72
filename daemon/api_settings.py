"""The ``[api]`` section: the write API's token, lease and limits.

The http front end (daemon/http_api.py) serves it on ``daemon.listen``; the gRPC front end
takes its token and limits too, and so does the one ``Registrar`` behind both. Kept apart
from the front ends' modules so the settings model imports no web framework.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import Field

from config.settings import Duration, Section


class ApiSettings(Section):
    """The push and watch API on ``daemon.listen``: its token and its limits.

    Writes (register, delete, the WebSocket) need the bearer token read from
    ``token_file``, else from the systemd credential ``capsync-api-token``
    ($CREDENTIALS_DIRECTORY). Without a token, writes are open on a loopback listener and
    the daemon refuses to start on any other."""

    section: ClassVar[str] = "api"
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
