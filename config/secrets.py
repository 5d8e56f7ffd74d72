"""The one reader of every secret file the settings name: the API token, the registry and
AMQP passwords, the Consul token, the gRPC private key.

One rule set, so no file is read more leniently than another: the file is read once (at
start or reload), at most ``SECRET_LIMIT`` bytes (a secret file holds the secret and
nothing else; anything larger is a mistake such as the wrong path); an empty file is an
error, not an empty password; a text secret is UTF-8 without surrounding whitespace; a
file others may read is reported (``secret_file_readable``) but still used, since
refusing it would stop a daemon that ran yesterday. Every error is a ``ConfigError``
naming the setting and the path.
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path

from config.errors import ConfigError
from config.events import emit
from config.files import read_bounded

SECRET_LIMIT = 64 * 1024  # bytes: room for a PEM private key; a token is a few dozen


def read_secret_bytes(path: Path, key: str) -> bytes:
    """The file's bytes under the rules above; ``key`` names the setting in errors."""
    where = f"{key} {path}"
    try:
        raw = read_bounded(path, SECRET_LIMIT)
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise ConfigError(f"{where}: {exc.strerror or exc}") from None
    if len(raw) > SECRET_LIMIT:
        raise ConfigError(
            f"{where}: larger than {SECRET_LIMIT} bytes; it should hold only the secret"
        )
    if not raw.strip():
        raise ConfigError(f"{where}: the file is empty")
    if mode & stat.S_IROTH:
        emit(logging.WARNING, "secret_file_readable", setting=key, path=path, mode=f"{mode:04o}")
    return raw


def read_secret(path: Path, key: str) -> str:
    """A text secret (token, password): UTF-8, without surrounding whitespace."""
    raw = read_secret_bytes(path, key)
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{key} {path}: not UTF-8; a secret is printable text") from None
