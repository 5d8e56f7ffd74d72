"""The image's HEALTHCHECK: GET /healthz at the address `capsync run` listens on, read
from the configuration exactly as the daemon reads it ([daemon] listen in the file that
CAPSYNC_CONFIG or /etc/capsync/capsync.toml names, then CAPSYNC_DAEMON__LISTEN), with the
standard library's HTTP client: the image carries no curl.

Exit 0 when /healthz answers 200, else 1 with one line saying why (Docker keeps the last
lines in `docker inspect`'s health log).
"""

from __future__ import annotations

import sys
import urllib.request
from urllib.error import URLError

from config.errors import CapsyncError
from config.loading import load
from daemon.settings_model import SETTINGS

# An address that means "every address" is reached through the loopback of its family.
WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104


def healthz_url(listen: str) -> str:
    """The /healthz URL for a `[daemon] listen` value; ValueError when nothing listens."""
    if listen == "off":
        raise ValueError("daemon.listen is 'off': no /healthz to check (set [daemon] listen)")
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if port == "0":
        raise ValueError(f"daemon.listen {listen!r}: a random port cannot be checked")
    host = WILDCARDS.get(host, host)
    return f"http://[{host}]:{port}/healthz" if ":" in host else f"http://{host}:{port}/healthz"


def main() -> int:
    try:
        url = healthz_url(load(SETTINGS).daemon.listen)
    except (CapsyncError, ValueError) as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(url, timeout=4) as answer:  # noqa: S310 (http only)
            status = answer.status
    except (URLError, OSError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    print(f"healthcheck: {url}: {status}")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
