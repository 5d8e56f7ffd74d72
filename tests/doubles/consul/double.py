"""ConsulDouble: the double's lifecycle and its test-facing controls."""

from __future__ import annotations

import ssl
import threading
from types import TracebackType

from .faults import Fault, Faults
from .http_util import Acl
from .server import Context, Server
from .state import Store


class ConsulDouble:
    """A Consul agent's HTTP API on 127.0.0.1, served from a daemon thread.

    `acl_token` turns ACLs on with that one management token; `default_token` is what a
    request without a token is treated as (acl.tokens.default; anonymous when "").
    `requests` records (method, path) of every request in arrival order; `inject` (and its
    shorthands `fail_requests`, `delay_requests`) adds a fault ahead of routing, as does
    `PUT /_double/faults` from outside (see faults.py); `store` is the state behind it (tests
    may swap `store.clock` to drive session timers without sleeping).
    """

    def __init__(
        self,
        *,
        port: int = 0,
        max_txn_ops: int = 128,
        acl_token: str | None = None,
        default_token: str = "",
        datacenter: str = "dc1",
        node_name: str = "consul-double",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.port = port
        self.tls = tls
        self.store = Store(datacenter, node_name)
        self.requests: list[tuple[str, str]] = []
        self._in_flight: dict[tuple[str, str], int] = {}
        self._most_in_flight: dict[tuple[str, str], int] = {}
        self._record_lock = threading.Lock()
        self._faults = Faults()
        acl = Acl(acl_token, default_token)
        self._context = Context(
            self.store, acl, max_txn_ops, self._faults, self._record, self._finished
        )
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
            now = self._in_flight[(method, path)] = self._in_flight.get((method, path), 0) + 1
            most = self._most_in_flight.get((method, path), 0)
            self._most_in_flight[(method, path)] = max(most, now)

    def _finished(self, method: str, path: str) -> None:
        with self._record_lock:
            self._in_flight[(method, path)] -= 1

    def most_in_flight(self, method: str, path: str) -> int:
        """The most requests for ``path`` that were in flight at once (being answered,
        a blocking query waiting included)."""
        with self._record_lock:
            return self._most_in_flight.get((method, path), 0)

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
            self._most_in_flight.clear()

    def inject(self, fault: Fault) -> None:
        """Add a fault; it applies to requests that arrive from now on."""
        self._faults.add(fault)

    def fail_requests(
        self,
        status: int = 500,
        body: str = "rpc error: No cluster leader",
        count: int | None = None,
    ) -> None:
        """Answer the next `count` requests (all of them if None) with `status` and `body`."""
        self.inject(Fault(status=status, body=body, times=count))

    def delay_requests(self, seconds: float) -> None:
        """Sleep this long before answering each request, to provoke client timeouts."""
        self.inject(Fault(delay=seconds))

    def clear_faults(self) -> None:
        self._faults.clear()

    def expire_session(self, session_id: str) -> None:
        """Invalidate a session now, exactly as its TTL timer would."""
        self.store.write(lambda tx: tx.destroy_session(session_id))
