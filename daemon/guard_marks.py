"""The deletion guard's high-water marks as the registry keeps them, beside the writer
claim in capsync's node meta (Consul node meta, the Redis node hash, the PostgreSQL node
row, the SQLite and memory node meta), so a restart or a timer running ``run --once``
reads the marks back and cannot empty a registry in slices.

One meta key per service, ``capsync-guard-<service>``, holds compact JSON
``{"<scope>": [count, unix seconds], ...}`` (scope ``*`` the owner, else a source name).
A mark stands until the window has passed since it was set; it is raised whenever more
entries are owned. The value fits Consul's node meta limit (512 characters): the
owner's mark always, then the largest sources' marks that fit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from daemon.plan import OWNER_SCOPE

PREFIX = "capsync-guard-"
MAX_VALUE = 512  # Consul's limit on a node meta value

Marks = Mapping[str, tuple[int, float]]  # scope -> (most entries owned, when it was set)


def key(service: str) -> str:
    return f"{PREFIX}{service.lower()}"


def read(meta: Mapping[str, str] | None, service: str) -> dict[str, tuple[int, float]]:
    """The marks in a node's meta; none when absent or unreadable (a hand-edited value
    is no reason to fail the cycle: the in-process memory still guards)."""
    try:
        data = json.loads((meta or {}).get(key(service), "") or "{}")
        return {
            str(scope): (int(count), float(at))
            for scope, (count, at) in data.items()
            if isinstance(scope, str)
        }
    except (ValueError, TypeError, AttributeError):
        return {}


def live(marks: Marks, now: float, window: float) -> dict[str, int]:
    """The marks still within the window, as the guard takes them (scope -> count)."""
    return {scope: count for scope, (count, at) in marks.items() if at >= now - window}


def advance(
    marks: Marks, counts: Mapping[str, int], now: float, window: float
) -> dict[str, tuple[int, float]]:
    """The marks after this cycle: raised where more are owned now, renewed once the
    window has passed, kept otherwise (so that unchanged marks write nothing)."""
    out = {scope: mark for scope, mark in marks.items() if mark[1] >= now - window}
    for scope, count in counts.items():
        current = out.get(scope)
        if current is None or count > current[0]:
            out[scope] = (count, now)
    return out


def encode(marks: Marks) -> str:
    """The meta value: the owner's mark, then the largest sources' while they fit."""
    order = sorted(marks.items(), key=lambda item: (item[0] != OWNER_SCOPE, -item[1][0]))
    kept: dict[str, tuple[int, int]] = {}
    for scope, (count, at) in order:
        trial = {**kept, scope: (count, round(at))}
        if len(json.dumps(trial, separators=(",", ":"))) > MAX_VALUE:
            continue
        kept = trial
    return json.dumps(kept, separators=(",", ":"))
