"""A loopback TCP proxy that counts round trips and breaks connections on cue.

A turn is a client send that follows an answer from the server (or opens the
connection): pipelined requests sent before any answer are one turn. A round trip is a
turn the server answered (a closing message nobody waits for is a turn, not a round
trip). ``cut_at`` forwards half of that turn's request and then drops both sides, as a
lost connection mid-batch does; ``hold_at`` keeps it back until ``release`` is set, so a
test can kill the server while a batch is in flight.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class Proxy:
    target: int
    cut_at: int | None = None
    hold_at: int | None = None
    turns: int = 0
    round_trips: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    held: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._closing = False
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        """Stop listening and drop every connection: to a client, the server is gone."""
        self._closing = True
        _close(self._listener)  # shutdown first: a bare close leaves accept() listening
        with self._lock:
            _close(*self._open)

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:  # the server is down: so is the proxied connection
                _close(client)
                continue
            with self._lock:
                self._open += [client, server]
            answered = threading.Event()
            answered.set()  # the connection's first send is a round trip
            threading.Thread(
                target=self._upstream, args=(client, server, answered), daemon=True
            ).start()
            threading.Thread(
                target=self._downstream, args=(server, client, answered), daemon=True
            ).start()

    def _upstream(
        self, client: socket.socket, server: socket.socket, answered: threading.Event
    ) -> None:
        try:
            while data := client.recv(65536):
                if answered.is_set():
                    answered.clear()
                    with self._lock:
                        self.turns += 1
                        turn = self.turns
                    if turn == self.hold_at:
                        self.held.set()
                        self.release.wait(60)
                        raise OSError("held round trip dropped")
                    if turn == self.cut_at:
                        server.sendall(data[: len(data) // 2])
                        raise OSError("cut")
                server.sendall(data)
        except OSError:
            pass
        _close(client, server)

    def _downstream(
        self, server: socket.socket, client: socket.socket, answered: threading.Event
    ) -> None:
        try:
            while data := server.recv(65536):
                if not answered.is_set():
                    answered.set()
                    with self._lock:
                        self.round_trips += 1
                client.sendall(data)
        except OSError:
            pass
        _close(client, server)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
