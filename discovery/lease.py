"""The one lease rule, for every way in (README, "Leases"):

- a registration with an explicit ``ttl`` lasts that long, whatever happens to the
  connection that carried it: it is not bound to the connection;
- one bound to a connection (a WebSocket, a gRPC Session) without a ttl expires ``grace``
  seconds from now; the connection renews it while it lives, and it leaves ``grace``
  seconds after the connection ends;
- one with neither stays until it is unregistered;
- a renewal never shortens a lease: registering again keeps the later expiry
  (``Inbox.renew`` keeps it too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from discovery.inbox import Registration

if TYPE_CHECKING:
    from discovery.intake import Command


@dataclass(frozen=True)
class Connection:
    """The connection a registration arrived on (a WebSocket, a gRPC Session), and how
    long its registrations outlive it."""

    id: str
    grace: float


def registration(
    command: Command,
    *,
    via: str,
    now: float,
    old: Registration | None,
    connection: Connection | None = None,
) -> Registration:
    """What to store for a registration arriving at ``now``, given what the inbox holds."""
    if command.ttl is not None:
        expires, bound = now + command.ttl, None
    elif connection is not None:
        expires, bound = now + connection.grace, connection.id
    else:
        expires, bound = None, None
    if old is not None and old.live(now) and old.expires is not None and expires is not None:
        expires = max(old.expires, expires)
    return Registration(command.id, command.body or {}, via, expires, bound)
