"""One object for each value a large fleet repeats: the validated declarations of
50,000 workers name a few dozen tools, flags and metadata keys between them, and a
copy of each per worker was most of what the daemon kept from cycle to cycle.

Strings are interned (``sys.intern``: an interned string is freed when nothing else
holds it). Tools are shared through a table that holds them weakly, for the same
reason; flags and metadata mappings through a bounded one. Only equal values of the
same types are shared (the declaration is validated strictly), so every record stays
exactly as its worker declared it.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from discovery.model import ToolCapability

Value = TypeVar("Value")

_TOOLS: weakref.WeakValueDictionary[ToolCapability, ToolCapability] = weakref.WeakValueDictionary()


def text(value: str) -> str:
    """The one copy of ``value`` (a name, a key, a short value)."""
    return sys.intern(value)


def texts(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sys.intern(value) for value in values)


def flags(values: Mapping[str, bool]) -> Mapping[str, bool]:
    """The shared mapping of these flags (names the shared copies)."""
    return _mapping(tuple((sys.intern(key), value) for key, value in values.items()))


def strings(values: Mapping[str, str]) -> Mapping[str, str]:
    """The shared mapping of these pairs (keys and values the shared copies)."""
    return _mapping(tuple((sys.intern(key), sys.intern(value)) for key, value in values.items()))


# Equal flags and metadata are one mapping (never changed once built: a Capabilities is
# frozen). Held strongly (a dict cannot be held weakly), so the table is bounded: past
# its size it starts again, and only later declarations share the new copies.
MAX_MAPPINGS = 4096
_MAPPINGS: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}


def _mapping(items: tuple[tuple[str, Value], ...]) -> dict[str, Value]:
    found = _MAPPINGS.get(items)
    if found is None:
        if len(_MAPPINGS) >= MAX_MAPPINGS:
            _MAPPINGS.clear()
        found = _MAPPINGS[items] = dict(items)
    return found


def tool(value: ToolCapability) -> ToolCapability:
    """The one ToolCapability equal to ``value`` that is alive, or ``value`` itself."""
    shared = _TOOLS.get(value)
    if shared is None:
        _TOOLS[value] = shared = value
    return shared
