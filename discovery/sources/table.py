"""Every source kind, in the order the help lists them. A new kind is one module in
this package ending with its ``KIND``, plus one entry here."""

from __future__ import annotations

from discovery.kinds import KindTable
from discovery.sources import amqp, consul, docker, file, inbox, kubernetes, swarm
from discovery.sources.base import Source

SOURCE_KINDS: KindTable[Source] = KindTable(
    "--source",
    "type",
    (file.KIND, docker.KIND, swarm.KIND, kubernetes.KIND, consul.KIND, inbox.KIND, amqp.KIND),
)
