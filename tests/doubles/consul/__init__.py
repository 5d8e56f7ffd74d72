"""A faithful, in-process double of the Consul agent HTTP API that capsync uses.

Contract: /work/shared/design/CONSUL-API.md. See `ConsulDouble`.

Options beyond a plain agent: `acl_token` (ACLs on, default deny, with that management
token) and `default_token` (the agent's acl.tokens.default, used for requests that carry no
token; anonymous when empty); `max_txn_ops` (64 or 128).

Fault injection (faults.py), for answers that are not data: on chosen paths (exact or
prefix, optionally one method) answer a status with a body and headers (a 429 with
`Retry-After`, a 404 or 502 HTML page from a proxy), optionally only `times` times, after a
`delay`. Drive it with `ConsulDouble.inject(Fault(...))` / `clear_faults()`, with
`PUT`/`GET`/`DELETE /_double/faults` (a path Consul never serves), or with
`python -m tests.doubles.consul --fault '{"path": "/v1/txn", "status": 429,
"headers": {"Retry-After": "2"}, "times": 1}'`.
"""

from .double import ConsulDouble
from .faults import Fault

__all__ = ["ConsulDouble", "Fault"]
