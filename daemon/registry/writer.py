"""Who may write on capsync's node: its owner, and for each service one writer (host).

The node's meta records ``capsync-owner`` and, per service, ``capsync-writer-<service>``
= the writer's identity (its host name unless configured). A restart on the same host
keeps the identity; a second host configured with the same owner and service finds
another writer recorded and refuses to write, instead of the two undoing each other's
work every cycle. With leader election on, writers are already serialised, so the
leader takes the node over.
"""

from __future__ import annotations

from collections.abc import Mapping

from config.errors import RegistryError, WriterClaimHeld
from daemon.registry.ownership import Ownership
from discovery.codec import EXTERNAL_SOURCE, OWNER

WRITER_PREFIX = "capsync-writer-"


def writer_key(service: str) -> str:
    return f"{WRITER_PREFIX}{service.lower()}"


def claim(
    meta: Mapping[str, str] | None,
    ownership: Ownership,
    *,
    where: str = "",
    record: Mapping[str, str] | None = None,
) -> dict[str, str] | None:
    """The node meta to write so that this capsync holds the node, with ``record`` (the
    guard's marks) in it (None: already held, and ``record`` already there; ``meta``
    None: the node does not exist). RegistryError when it may not write, its message led
    by ``where`` (which registry) when given."""
    try:
        wanted = _claim(meta, ownership)
    except RegistryError as exc:
        raise type(exc)(f"{where}: {exc}" if where else str(exc)) from None
    current = wanted if wanted is not None else dict(meta or {})
    if not record or all(current.get(k) == v for k, v in record.items()):
        return wanted
    return {**current, **record}


def _claim(meta: Mapping[str, str] | None, ownership: Ownership) -> dict[str, str] | None:
    node, owner, service = ownership.node, ownership.owner, ownership.service
    writer, key = ownership.writer, writer_key(ownership.service)
    if meta is None:
        return {"external-node": "true", EXTERNAL_SOURCE: "capsync", OWNER: owner, key: writer}
    if meta.get(OWNER) != owner:
        raise RegistryError(
            f"node {node!r} has capsync-owner {meta.get(OWNER)!r}: it is not capsync's node "
            f"for owner {owner!r} (its meta: {dict(meta)}); refusing to write to it. Choose "
            "another registry.node or owner."
        )
    holder = meta.get(key)
    if holder == writer:
        return None
    if holder and not ownership.takeover:
        raise WriterClaimHeld(
            f"node {node!r}: service {service!r} of owner {owner!r} is written by "
            f"{holder!r} ({key}), and this capsync is {writer!r}; two hosts with the same "
            "owner would undo each other's work, so this one writes nothing. Give each host "
            "its own registry.owner, or turn on daemon.leader_election."
        )
    return {**meta, key: writer}
