"""ConsulDouble: the double's lifecycle and its test-facing controls."""

from __future__ import annotations

import ssl
import threading
from types import TracebackType

from .server import Context, Faults, Server
from .state import Store


class ConsulDouble:
    """A Consul agent's HTTP API on 127.0.0.1, served from a daemon thread.

    `requests` records (method, path) of every request in arrival order; `fail_requests`
    and `delay_requests` inject faults ahead of routing; `store` is the state behind it
    (tests may swap `store.clock` to drive session timers without sleeping).
    """

    def __init__(
        self,
        *,
        port: int = 0,
        max_txn_ops: int = 128,
        acl_token: str | None = None,
        datacenter: str = "dc1",
        node_name: str = "consul-double",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.port = port
        self.tls = tls
        self.store = Store(datacenter, node_name)
        self.requests: list[tuple[str, str]] = []
        self._record_lock = threading.Lock()
        self._faults = Faults()
        self._context = Context(self.store, acl_token, max_txn_ops, self._faults, self._record)
        self._httpd: Server | None = None
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> str:
        """What CONSUL_HTTP_ADDR would hold."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    def start(self) -> ConsulDouble:
        httpd = Server(self.port, self._context, self.tls)
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._threads = [
            threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": 0.02},  # stop() waits up to one poll
                name="consul-double-http",
                daemon=True,
            ),
            threading.Thread(target=self.store.run_reaper, name="consul-double-ttl", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket and every open connection, as a dying agent would;
        blocked queries are woken first. Safe to call twice."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        self.store.close()
        httpd.close_connections()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> ConsulDouble:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _record(self, method: str, path: str) -> None:
        with self._record_lock:
            self.requests.append((method, path))

    def count(self, method: str | None = None, path_prefix: str = "") -> int:
        with self._record_lock:
            return sum(
                1
                for m, p in self.requests
                if (method is None or m == method) and p.startswith(path_prefix)
            )

    def reset_counts(self) -> None:
        with self._record_lock:
            self.requests.clear()

    def fail_requests(
        self,
        status: int = 500,
        body: str = "rpc error: No cluster leader",
        count: int | None = None,
    ) -> None:
        """Answer the next `count` requests (all of them if None) with `status` and `body`."""
        with self._faults.lock:
            self._faults.status, self._faults.body, self._faults.remaining = status, body, count

    def delay_requests(self, seconds: float) -> None:
        """Sleep this long before answering each request, to provoke client timeouts."""
        self._faults.delay = seconds

    def clear_faults(self) -> None:
        with self._faults.lock:
            self._faults.status, self._faults.remaining, self._faults.delay = 0, None, 0.0

    def expire_session(self, session_id: str) -> None:
        """Invalidate a session now, exactly as its TTL timer would."""
        self.store.write(lambda tx: tx.destroy_session(session_id))
