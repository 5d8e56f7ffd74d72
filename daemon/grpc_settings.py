"""The ``[grpc]`` section: the gRPC front end's listener, TLS and limits.

Apart from daemon/grpc_api.py, which needs the optional ``grpc`` extra: the settings model
reads and checks ``[grpc]`` whether the extra is installed or not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import Field, field_validator, model_validator

from config.settings import CertPair, host_port


class GrpcSettings(CertPair):
    """The gRPC API (WorkerRegistry, health, reflection) on its own listener: off unless
    ``listen`` is set. It takes the ``[api]`` token (writes need it; without it the daemon
    refuses a listener that is not loopback) and limits (message size, grace, TTL). TLS
    with ``cert_file`` and ``key_file``; ``client_ca_file`` also requires every client to
    present a certificate signed by that CA. At most ``max_rpcs`` calls at once (streams
    included); one more is answered RESOURCE_EXHAUSTED. Long-lived calls that need no token
    (health ``Watch``, reflection) count under ``max_open_streams`` of their own, so they
    cannot take the calls ``Register`` needs."""

    section: ClassVar[str] = "grpc"

    listen: str = "off"
    client_ca_file: Path | None = None
    max_rpcs: Annotated[int, Field(ge=1, le=10_000)] = 256
    max_open_streams: Annotated[int, Field(ge=1, le=10_000)] = 16

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return host_port(value, "127.0.0.1:9470")

    @model_validator(mode="after")
    def _tls(self) -> GrpcSettings:
        if self.client_ca_file is not None and self.cert_file is None:
            raise ValueError("client_ca_file needs cert_file and key_file (TLS)")
        return self
