"""The settings schema: every option capsync has, its default, and its rule."""

from __future__ import annotations

import re
import socket

OWNER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def default_owner() -> str:
    """The host name, shortened to a valid owner id (it names the synthetic node)."""
    name = socket.gethostname().split(".")[0] or "localhost"
    name = re.sub(r"[^A-Za-z0-9._-]", "-", name).lstrip("._-")[:64]
    return name or "localhost"
