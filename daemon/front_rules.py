"""The rules every front end shares, whatever its protocol: the write token check, the
pacing of a connection's messages, and "loopback or a token" for a listener. One module
of their own, so that gRPC (or any other front end) imports nothing from the HTTP stack.
"""

from __future__ import annotations

import hmac
import ipaddress

from config.errors import ConfigError
from config.secrets import read_secret
from daemon.api_settings import ApiSettings

CREDENTIAL = "capsync-api-token"


def read_token(settings: ApiSettings) -> str | None:
    """The write token: ``api.token_file``, else the systemd credential, else none."""
    path = settings.token_file
    if path is None and (directory := settings.credentials_directory):
        candidate = directory / CREDENTIAL
        path = candidate if candidate.exists() else None
    return None if path is None else read_secret(path, "api.token_file")


def authorized(header: str | None, token: str | None) -> bool:
    """``Authorization: Bearer <token>`` matches (constant time); always true without a
    token (writes are open: loopback only)."""
    if token is None:
        return True
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_token_off_loopback(
    key: str, listen: str, token: str | None, bound: str | None = None
) -> None:
    """Writes are open without a token: only on loopback (ConfigError otherwise).
    ``bound`` is the address a socket for ``listen`` was bound to, when there is one."""
    if token is None and not is_loopback(bound or listen.rpartition(":")[0].strip("[]")):
        raise ConfigError(
            f"{key} {listen}: not a loopback address and no API token: set "
            f"api.token_file or the systemd credential {CREDENTIAL}, or "
            "listen on 127.0.0.1"
        )


class Pace:
    """At most ``rate`` messages a second after a burst of ``rate``: a client sending
    faster is slowed down (its messages wait), never served at the others' expense."""

    def __init__(self, rate: int) -> None:
        self.interval = 1.0 / rate
        self.burst = rate * self.interval
        self.next = 0.0

    def delay(self, now: float) -> float:
        self.next = max(self.next, now - self.burst) + self.interval
        return max(0.0, self.next - now)
