"""Reading a file the settings or a source name, without letting it block or flood us."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


def read_bounded(path: Path | str, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of a regular file (more than ``limit``: too large).

    Opened non-blocking and checked with fstat, so a FIFO or a device never blocks the
    caller and is refused with OSError, like a file that cannot be read.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        chunks, remaining = [], limit + 1
        while remaining > 0 and (chunk := os.read(fd, remaining)):
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
