"""KV verbs and reads, shared by /v1/kv and /v1/txn (agent/consul/state/kvs.go, txn.go).

Each verb returns what the state store returns: the resulting entry (or None) and raises
FSMError with Consul's text when the store refuses the operation.
"""

from __future__ import annotations

from dataclasses import replace

from .gojson import go_quote
from .records import KVEntry
from .state import FSMError, Tables, Tx

WRITE_VERBS = frozenset({"set", "delete", "delete-cas", "delete-tree", "cas", "lock", "unlock"})


def cas(tx: Tx, entry: KVEntry) -> KVEntry | None:
    """kvsSetCASTxn: index 0 creates only; otherwise the index must be the current one."""
    existing = tx.t.kvs.get(entry.key)
    if entry.modify_index == 0:
        stale = existing is not None
    else:
        stale = existing is None or existing.modify_index != entry.modify_index
    return None if stale else tx.set_key(entry, update_session=False)


def lock(tx: Tx, entry: KVEntry) -> KVEntry | None:
    """kvsLockTxn: the session must exist; another holder means no lock (None)."""
    if not entry.session:
        raise FSMError("missing session")
    if entry.session not in tx.t.sessions:
        raise FSMError(f"invalid session {go_quote(entry.session)}")
    existing = tx.t.kvs.get(entry.key)
    lock_index = 1
    if existing is not None:
        if existing.session and existing.session != entry.session:
            return None
        lock_index = existing.lock_index + (0 if existing.session == entry.session else 1)
    return tx.set_key(replace(entry, lock_index=lock_index), update_session=True)


def unlock(tx: Tx, entry: KVEntry) -> KVEntry | None:
    """kvsUnlockTxn: only the holding session releases; the value is still written."""
    if not entry.session:
        raise FSMError("missing session")
    existing = tx.t.kvs.get(entry.key)
    if existing is None or existing.session != entry.session:
        return None
    released = replace(entry, session="", lock_index=existing.lock_index)
    return tx.set_key(released, update_session=True)


def delete_cas(tx: Tx, key: str, index: int) -> bool:
    """kvsDeleteCASTxn: a missing key counts as deleted."""
    existing = tx.t.kvs.get(key)
    if existing is None or existing.modify_index != index:
        return existing is None
    tx.delete_key(key)
    return True


def delete_tree(tx: Tx, prefix: str) -> None:
    """kvsDeleteTreeTxn: one tombstone for the prefix (none when the whole tree goes)."""
    doomed = [k for k in tx.t.kvs if k.startswith(prefix)]
    if not doomed:
        return
    for key in doomed:
        del tx.t.kvs[key]
    if prefix:
        tx.t.tombstones[prefix] = tx.idx
        tx.bump("tombstones")
    tx.bump("kvs")


def check_session(t: Tables, key: str, session: str) -> KVEntry:
    entry = t.kvs.get(key)
    if entry is None:
        raise FSMError(f"failed to check session, key {go_quote(key)} doesn't exist")
    if entry.session != session:
        raise FSMError(
            f"failed session check for key {go_quote(key)}, current session "
            f"{go_quote(entry.session)} != {go_quote(session)}"
        )
    return entry


def check_index(t: Tables, key: str, index: int) -> KVEntry:
    entry = t.kvs.get(key)
    if entry is None:
        raise FSMError(f"failed to check index, key {go_quote(key)} doesn't exist")
    if entry.modify_index != index:
        raise FSMError(
            f"failed index check for key {go_quote(key)}, current modify index "
            f"{entry.modify_index} != {index}"
        )
    return entry


def get(t: Tables, key: str) -> tuple[int, KVEntry | None]:
    """KVSGet: a present key answers its ModifyIndex, a missing one the table index."""
    entry = t.kvs.get(key)
    if entry is not None:
        return entry.modify_index, entry
    return t.max_index("kvs", "tombstones"), None


def listing(t: Tables, prefix: str) -> tuple[int, list[KVEntry]]:
    """kvsListTxn: newest entry or tombstone under the prefix, else the table index."""
    entries = sorted((e for k, e in t.kvs.items() if k.startswith(prefix)), key=lambda e: e.key)
    table = t.max_index("kvs", "tombstones")
    if not prefix:
        return table, entries
    newest = max([e.modify_index for e in entries], default=0)
    graves = [idx for key, idx in t.tombstones.items() if key.startswith(prefix)]
    newest = max([newest, *graves])
    return (newest or table), entries


def keys(entries: list[KVEntry], prefix: str, separator: str) -> list[str]:
    """KVS.ListKeys: keys under the prefix, cut after the first separator and deduplicated."""
    out: dict[str, None] = {}
    for entry in entries:
        cut = entry.key.find(separator, len(prefix)) if separator else -1
        out[entry.key if cut < 0 else entry.key[: cut + len(separator)]] = None
    return list(out)
