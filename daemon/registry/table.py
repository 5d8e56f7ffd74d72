"""Every registry kind, in the order the help lists them. A new kind is one module in
this package ending with its ``KIND``, plus one entry here."""

from __future__ import annotations

from daemon.registry import consul, memory, postgres, redis, sqlite
from daemon.registry.base import Registry
from discovery.kinds import KindTable

REGISTRY_KINDS: KindTable[Registry] = KindTable(
    "--registry", "backend", (consul.KIND, sqlite.KIND, redis.KIND, postgres.KIND, memory.KIND)
)
