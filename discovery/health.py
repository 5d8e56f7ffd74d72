"""A worker's health as the place it lives reports it, and the damping of its changes.

Health rides beside a declaration, never in it: it is not part of the entry's digest, so
a health change costs no validation and no rewrite of the declaration, only a health
update. A worker whose place gives no signal (a file, a plain registration) is passing.
Only the status decides whether something changed; the output says why, as it was when
the status last changed.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Literal

Status = Literal["passing", "warning", "critical"]
STATUSES: tuple[Status, ...] = ("passing", "warning", "critical")


@dataclass(frozen=True, slots=True)
class Health:
    """One worker's health: Consul's three states, and the text that says why."""

    status: Status = "passing"
    output: str = ""

    @property
    def healthy(self) -> bool:
        """What ``find --healthy`` and ``?passing`` keep: passing only."""
        return self.status == "passing"


PASSING = Health()
# What a registry reports for an owned entry it holds no health for (written before
# health existed): different from every real status, so the next cycle writes one.
UNKNOWN = Health("critical", "capsync: no health recorded")


def changed(old: Health, new: Health) -> bool:
    """Whether a registry holding ``old`` must be written ``new``: the status changed, or
    the registry holds none (UNKNOWN: written whatever the status, even critical)."""
    # UNKNOWN's status is checked first: a steady fleet compares no Health in full.
    return old.status != new.status or (old.status == UNKNOWN.status and old == UNKNOWN)


def status_of(text: str) -> Status | None:
    """A status as Consul words it; None for anything else (``maintenance``, junk)."""
    return next((status for status in STATUSES if status == text), None)


def health_text(health: Health) -> str:
    """How a store keeps a health beside an entry: compact JSON."""
    return json.dumps({"status": health.status, "output": health.output}, separators=(",", ":"))


def health_from_text(text: str | None) -> Health:
    """A stored health; UNKNOWN for none (a row written before health was kept) or one
    that does not read (it is then written again)."""
    try:
        data = json.loads(text or "null")
    except ValueError:
        return UNKNOWN
    if not isinstance(data, dict):
        return UNKNOWN
    status, output = data.get("status"), data.get("output")
    known = status_of(status) if isinstance(status, str) else None
    return Health(known, output) if known and isinstance(output, str) else UNKNOWN


def worst(*healths: Health) -> Health:
    """The least healthy of several signals (a container's state and its probe)."""
    return max(healths, key=lambda h: STATUSES.index(h.status), default=PASSING)


@dataclass(slots=True)  # one per worker: no __dict__ each
class _Held:
    shown: Health
    since: float


class Damper:
    """A minimum time in a state: a worker's shown health changes at once after it has
    been shown for ``min_seconds``; a change sooner waits until that time (``due``), and
    is dropped if the source has gone back meanwhile. A worker flapping faster than
    ``min_seconds`` therefore costs at most one write per ``min_seconds``, whatever the
    number of flaps. The first health seen for a worker is shown at once."""

    def __init__(self, min_seconds: float = 0.0) -> None:
        self.min_seconds = min_seconds
        self._held: dict[Hashable, _Held] = {}

    def settle(
        self, reported: dict[Hashable, Health], now: float
    ) -> tuple[dict[Hashable, Health], float | None]:
        """The health to show per key, and the earliest instant a held change is due
        (None: nothing held). Keys no longer reported are forgotten."""
        shown: dict[Hashable, Health] = {}
        due: float | None = None
        held = {}
        for key, health in reported.items():
            state = self._held.get(key)
            if state is None:
                state = _Held(health, now)
            elif health.status != state.shown.status:
                ready = state.since + self.min_seconds
                if now >= ready:
                    state = _Held(health, now)
                else:
                    due = ready if due is None else min(due, ready)
            held[key] = state
            shown[key] = state.shown
        self._held = held
        return shown, due
