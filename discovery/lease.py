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

from typing import Any

from discovery.inbox import Registration


def registration(
    worker_id: str,
    body: dict[str, Any],
    *,
    via: str,
    now: float,
    ttl: float | None,
    old: Registration | None,
    conn: str | None = None,
    grace: float = 0.0,
) -> Registration:
    """What to store for a registration arriving at ``now``, given what the inbox holds."""
    if ttl is not None:
        expires, bound = now + ttl, None
    elif conn is not None:
        expires, bound = now + grace, conn
    else:
        expires, bound = None, None
    if old is not None and old.live(now) and old.expires is not None and expires is not None:
        expires = max(old.expires, expires)
    return Registration(worker_id, body, via, expires, bound)
