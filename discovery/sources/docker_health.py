"""A container's health as its engine reports it: its state and its HEALTHCHECK.

The container list already says which state a probe is in (its ``Status`` text ends in
``(healthy)``, ``(unhealthy)`` or ``(health: starting)``), so a steady fleet costs no
more than the list. Only when a container's probe state changes is it inspected, once,
for the words that say why (its failing streak and last probe output).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from discovery.health import PASSING, Health

_PROBE = re.compile(r"\((healthy|unhealthy|health: starting)\)\s*$")
MAX_PROBE_OUTPUT = 200  # characters of the last probe's output kept in the reason


def probe_state(container: dict[str, Any]) -> str:
    """``healthy``, ``unhealthy``, ``starting``, or "" (no HEALTHCHECK)."""
    found = _PROBE.search(str(container.get("Status") or ""))
    return "" if found is None else found.group(1).removeprefix("health: ")


class ContainerHealth:
    """Health per container id, with the reason read (by ``inspect``) only when a
    container's probe state changes; containers no longer listed are forgotten."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[str, Health]] = {}

    def of(
        self, containers: list[dict[str, Any]], inspect: Callable[[str], dict[str, Any]]
    ) -> dict[str, Health]:
        known: dict[str, tuple[str, Health]] = {}
        for container in containers:
            cid, state = container.get("Id"), probe_state(container)
            if not isinstance(cid, str) or state in ("", "healthy"):
                continue
            previous = self._known.get(cid)
            if previous is not None and previous[0] == state:
                known[cid] = previous
            else:
                known[cid] = (state, _health(state, inspect(cid)))
        self._known = known
        return {cid: health for cid, (_, health) in known.items()}

    def get(self, cid: str) -> Health:
        known = self._known.get(cid)
        return PASSING if known is None else known[1]


def _health(state: str, inspected: dict[str, Any]) -> Health:
    probe = ((inspected.get("State") or {}).get("Health")) or {}
    if state == "starting":
        return Health("warning", "docker: health: starting (no probe has passed yet)")
    streak = probe.get("FailingStreak")
    failed = f" ({streak} failed probes)" if isinstance(streak, int) and streak > 0 else ""
    log = probe.get("Log") or []
    last = log[-1].get("Output") if log and isinstance(log[-1], dict) else ""
    said = " ".join(str(last or "").split())[:MAX_PROBE_OUTPUT]
    return Health("critical", f"docker: unhealthy{failed}" + (f": {said}" if said else ""))
