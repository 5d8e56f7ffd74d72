"""Consul's checks on catalog input, with its exact error texts.

From agent/structs/structs.go (validateMetadata, validateMetaPair), agent/consul/
catalog_endpoint.go (nodePreApply, servicePreApply) and ipaddr.IsAny.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

META_MAX_PAIRS = 64
META_KEY_MAX = 128
META_VALUE_MAX = 512
_META_KEY = re.compile(r"[a-zA-Z0-9_-]+")
_HEX = re.compile(r"[0-9a-fA-F]*")


def meta_error(meta: Mapping[str, str] | None) -> str | None:
    """The reason ValidateServiceMetadata gives for `meta`, or None if it is valid."""
    if not meta:
        return None
    if len(meta) > META_MAX_PAIRS:
        return f"Node metadata cannot contain more than {META_MAX_PAIRS} key/value pairs"
    for key, value in meta.items():
        reason = _pair_error(key, value)
        if reason:
            return f"Couldn't load metadata pair ('{key}', '{value}'): {reason}"
    return None


def _pair_error(key: str, value: str) -> str | None:
    if key == "":
        return "Key cannot be blank"
    if not _META_KEY.fullmatch(key):
        return "Key contains invalid characters"
    if len(key.encode()) > META_KEY_MAX:
        return f"Key is too long (limit: {META_KEY_MAX} characters)"
    if key.startswith("consul-"):
        return "Key prefix 'consul-' is reserved for internal use"
    if len(value.encode()) > META_VALUE_MAX:
        return f"Value is too long (limit: {META_VALUE_MAX} characters)"
    return None


def node_pre_apply(name: str, node_id: str) -> str | None:
    """nodePreApply: a node needs a name, and an ID must parse as a UUID (go-uuid)."""
    if name == "":
        return "Must provide node"
    if node_id:
        reason = _uuid_error(node_id)
        if reason:
            return f"Bad node ID: {reason}"
    return None


def _uuid_error(text: str) -> str | None:
    if len(text) != 36:
        return "uuid string is wrong length"
    if [i for i, c in enumerate(text) if c == "-"] != [8, 13, 18, 23]:
        return "uuid is improperly formatted"
    for ch in text.replace("-", ""):
        if not _HEX.fullmatch(ch):
            return f"encoding/hex: invalid byte: U+{ord(ch):04X} {ch!r}"
    return None


def is_any_address(address: str) -> bool:
    """ipaddr.IsAny: the wildcard addresses Consul refuses as a service address."""
    return address in {"0.0.0.0", "::", "[::]"}


def service_pre_apply(service: dict[str, object]) -> str | None:
    """servicePreApply's validation (ACLs aside); defaults the ID to the name in place."""
    if not service.get("ID") and service.get("Service"):
        service["ID"] = service["Service"]
    if service.get("ID") and not service.get("Service"):
        return "Must provide service name (Service.Service) when service ID is provided"
    if is_any_address(str(service.get("Address") or "")):
        return "Invalid service address"
    return None
