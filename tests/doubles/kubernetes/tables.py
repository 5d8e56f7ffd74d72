"""Server-side printing of custom resources: a meta.k8s.io/v1 Table from the CRD's
additionalPrinterColumns, as kubectl asks for it (``Accept: ...;as=Table;v=v1;
g=meta.k8s.io``) and prints it (``kubectl get wcap``).

As apiextensions-apiserver's tableconvertor does it: a Name column, then one column per
printer column; each cell is the FIRST value its simple JSONPath finds (a ``[*]`` path
shows one element), typed by the column (a ``date`` shown as an age, like "5m"), null
when nothing is found. Rows carry the object's metadata (PartialObjectMetadata).
Built-in types are answered as plain JSON, which kubectl prints as names and ages.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

_STEP = re.compile(r"\.([A-Za-z0-9_-]+)|\[(\*|\d+)\]")


def wanted(accept: str) -> bool:
    """Whether the client asked for a Table (the first acceptable type kubectl lists)."""
    for media in accept.split(","):
        params = {p.strip() for p in media.split(";")[1:]}
        if {"as=Table", "g=meta.k8s.io", "v=v1"} <= params:
            return True
    return False


def columns(crd: dict[str, Any], version: str) -> list[dict[str, Any]]:
    for served in crd.get("spec", {}).get("versions", []):
        if served.get("name") == version:
            found: list[dict[str, Any]] = served.get("additionalPrinterColumns") or [
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
            ]
            return found
    return []


def table(
    printer: list[dict[str, Any]], items: list[dict[str, Any]], list_meta: dict[str, Any]
) -> dict[str, Any]:
    headers = [{"name": "Name", "type": "string", "format": "name", "priority": 0}] + [
        {
            "name": col["name"],
            "type": col["type"],
            "format": col.get("format", ""),
            "description": col.get("description")
            or f"Custom resource definition column (in JSONPath format): {col['jsonPath']}",
            "priority": col.get("priority", 0),
        }
        for col in printer
    ]
    rows = [
        {
            "cells": [obj["metadata"]["name"]] + [_cell(col, obj) for col in printer],
            "object": {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            },
        }
        for obj in items
    ]
    meta = {k: v for k, v in list_meta.items() if k in ("resourceVersion", "continue")}
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": headers,
        "rows": rows,
    }


def _cell(column: dict[str, Any], obj: dict[str, Any]) -> Any:
    found = _find(column["jsonPath"], obj)
    if not found or found[0] is None:
        return None
    value, kind = found[0], column["type"]
    if kind == "string":
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if kind == "integer" and isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "date" and isinstance(value, str):
        try:
            then = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            return "<invalid>"
        return human_duration((datetime.now(UTC) - then).total_seconds())
    return None


def _find(path: str, obj: Any) -> list[Any]:
    """A simple JSONPath (``.a.b``, ``.a[*].b``, ``.a[0]``), missing keys allowed."""
    values = [obj]
    for key, index in _STEP.findall(path):
        step: list[Any] = []
        for value in values:
            if key and isinstance(value, dict) and key in value:
                step.append(value[key])
            elif index == "*" and isinstance(value, list):
                step.extend(value)
            elif index and index != "*" and isinstance(value, list) and int(index) < len(value):
                step.append(value[int(index)])
        values = step
    return values


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration, as kubectl's AGE shows it."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes, hours = s // 60, s // 3600
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    years, days = hours // 24 // 365, hours // 24 % 365
    return f"{years}y{days}d" if hours < 24 * 365 * 8 and days else f"{years}y"
