"""The systemd notify protocol (sd_notify), spoken directly: one datagram per message.

Without NOTIFY_SOCKET (not under systemd) every call is a no-op, so the daemon runs the
same in a terminal, a container or a unit.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import ClassVar

from config import loading
from config.settings import Section


class Supervision(Section):
    """What systemd tells its service in the environment: the notify socket and the
    watchdog. config/loading.py hands it over; all empty when not under systemd."""

    environment: ClassVar[Mapping[str, str]] = {
        "notify_socket": "NOTIFY_SOCKET",
        "watchdog_usec": "WATCHDOG_USEC",
        "watchdog_pid": "WATCHDOG_PID",
    }

    notify_socket: str = ""
    watchdog_usec: str = ""
    watchdog_pid: str = ""

    @classmethod
    def given(cls) -> Supervision:
        return cls.model_validate(loading.with_environment(cls, {}))


class Notifier:
    def __init__(self, supervision: Supervision | None = None) -> None:
        given = supervision or Supervision()
        path = given.notify_socket
        self._address = "\0" + path[1:] if path.startswith("@") else path
        usec, pid = given.watchdog_usec, given.watchdog_pid
        watched = usec.isdigit() and (not pid or pid == str(os.getpid()))
        self.watchdog_interval = int(usec) / 2_000_000 if watched else None

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def ready(self, status: str = "") -> None:
        self._send("READY=1", f"STATUS={status}" if status else "")

    def reloading(self) -> None:
        self._send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def status(self, text: str) -> None:
        self._send(f"STATUS={text}")

    def watchdog(self) -> None:
        if self.watchdog_interval is not None:
            self._send("WATCHDOG=1")

    def _send(self, *lines: str) -> None:
        if not self._address:
            return
        message = "\n".join(line for line in lines if line).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto(message, self._address)
            except OSError:
                # systemd gone or socket closed: nothing useful to do; the service manager
                # notices a missing watchdog ping on its own.
                return
