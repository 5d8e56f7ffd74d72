"""Reads and writes of single objects, as the API server's generic registry answers them.

What kubectl does for capsync's users: ``get`` one object, ``apply`` (a GET, then a
create or a JSON merge patch), ``annotate`` (a merge patch) and ``auth can-i`` (a
SelfSubjectAccessReview). Strategic-merge directives, JSON patch and server-side apply
are refused with a message that says so rather than answered wrongly.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .rbac import Attributes, User
from .resources import ACCESS_REVIEWS, CRD_NAME, CRDS, NAMESPACES, ResourceType
from .store import Conflict, Store

if TYPE_CHECKING:
    from . import KubernetesDouble

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"


class StatusError(Exception):
    """A request the API server answers with this Status."""

    def __init__(self, status: dict[str, Any]) -> None:
        super().__init__(status["message"])
        self.status = status


def failure(code: int, message: str, reason: str, **details: str) -> StatusError:
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        status["details"] = details
    return StatusError(status)


def not_found(kind: ResourceType, name: str) -> StatusError:
    details = {"name": name, "kind": kind.plural}
    if kind.group:
        details["group"] = kind.group
    return failure(404, f'{kind.qualified} "{name}" not found', "NotFound", **details)


def verb(method: str, name: str | None, watch: bool, kind: ResourceType) -> str:
    """The RBAC verb of a request (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go)."""
    if method == "GET":
        return "watch" if watch else ("get" if name else "list")
    return {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}.get(
        method, method.lower()
    )


def read(store: Store, kind: ResourceType, namespace: str, name: str) -> dict[str, Any]:
    obj = store.get(kind.plural, namespace, name)
    if obj is None:
        raise not_found(kind, name)
    return obj


def create(
    double: KubernetesDouble,
    kind: ResourceType,
    namespace: str,
    query: dict[str, str],
    user: User,
    body: bytes,
) -> dict[str, Any]:
    """A POST to a collection: 201 and the stored object."""
    if query.get("dryRun"):
        raise failure(400, "dryRun: the double does not implement it", "BadRequest")
    obj = _decode(body)
    _check_type(obj, kind)
    if kind.plural == ACCESS_REVIEWS:
        return _review(double, user, obj)
    return store_new(double, kind, namespace, obj)


def store_new(
    double: KubernetesDouble, kind: ResourceType, namespace: str, obj: dict[str, Any]
) -> dict[str, Any]:
    """Create one object as the API server's registry does, or raise its refusal."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        raise failure(
            422,
            f'{kind.kind} "" is invalid: metadata.name: Required value: name or '
            "generateName is required",
            "Invalid",
        )
    if kind.namespaced and meta.get("namespace", namespace) != namespace:
        raise failure(
            400,
            "the namespace of the provided object does not match the namespace sent on the request",
            "BadRequest",
        )
    if kind.namespaced and double.store.get(NAMESPACES, "", namespace) is None:
        raise failure(
            404, f'namespaces "{namespace}" not found', "NotFound", name=namespace, kind=NAMESPACES
        )
    if kind.plural == CRDS:
        # The CRD controllers' work, done at once: the names are accepted and served.
        obj["status"] = {
            "acceptedNames": obj.get("spec", {}).get("names", {}),
            "conditions": [{"type": "Established", "status": "True"}],
        }
    try:
        created = double.store.create(kind.plural, namespace, obj)
    except Conflict as exc:
        name = meta["name"]
        raise failure(409, str(exc), "AlreadyExists", name=name, kind=kind.plural) from None
    if kind.plural == CRDS and meta["name"] == CRD_NAME:
        double.crd_installed = True
    return created


def patch(
    store: Store, kind: ResourceType, namespace: str, name: str, content_type: str, body: bytes
) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386), or a strategic merge patch without directives,
    which merges the same way; 409 if it names an older resourceVersion."""
    media = content_type.split(";", maxsplit=1)[0].strip()
    if media == STRATEGIC_PATCH and kind.custom:
        # Custom resources have no Go struct to take strategic-merge keys from.
        raise failure(
            415,
            "the body of the request was in an unknown format - accepted media types "
            "include: application/json-patch+json, application/merge-patch+json, "
            "application/apply-patch+yaml",
            "UnsupportedMediaType",
        )
    if media not in (MERGE_PATCH, STRATEGIC_PATCH):
        raise failure(
            415, f"{media}: the double implements only merge patches", "UnsupportedMediaType"
        )
    change = _decode(body)
    if media == STRATEGIC_PATCH and (directive := _directive(change)):
        raise failure(
            400,
            f"{directive}: the double does not implement strategic-merge directives",
            "BadRequest",
        )
    current = read(store, kind, namespace, name)
    wanted = (change.get("metadata") or {}).get("resourceVersion")
    if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
        raise failure(
            409,
            f'Operation cannot be fulfilled on {kind.qualified} "{name}": the object has '
            "been modified; please apply your changes to the latest version and try again",
            "Conflict",
            name=name,
            kind=kind.plural,
        )
    merged = merge_patch(current, change)
    merged["metadata"].update(name=name)
    return store.write(kind.plural, namespace, merged)


def merge_patch(target: Any, change: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes, anything else replaces."""
    if not isinstance(change, dict):
        return change
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in change.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _directive(change: Any) -> str | None:
    if isinstance(change, dict):
        for key, value in change.items():
            if key.startswith("$") or (found := _directive(value)):
                return key if key.startswith("$") else found
    if isinstance(change, list):
        for item in change:
            if found := _directive(item):
                return found
    return None


def _review(double: KubernetesDouble, user: User, obj: dict[str, Any]) -> dict[str, Any]:
    """A SelfSubjectAccessReview, answered for the caller from the stored RBAC."""
    attrs = obj.get("spec", {}).get("resourceAttributes")
    if not isinstance(attrs, dict):
        raise failure(
            422,
            "SelfSubjectAccessReview.authorization.k8s.io is invalid: spec.resourceAttributes:"
            " Invalid value: the double answers resource attributes only",
            "Invalid",
        )
    request = Attributes(
        verb=attrs.get("verb", ""),
        group=attrs.get("group", ""),
        resource=attrs.get("resource", ""),
        namespace=attrs.get("namespace", ""),
        name=attrs.get("name", ""),
    )
    verdict = double.may(user, request)
    status: dict[str, Any] = {"allowed": verdict}
    if verdict:
        status["reason"] = "allowed by the double's RBAC"
    return {**obj, "metadata": {"creationTimestamp": None}, "status": status}


def _decode(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body or b"null")
    except ValueError as exc:
        raise failure(400, f"the body is not JSON: {exc}", "BadRequest") from None
    if not isinstance(obj, dict):
        raise failure(400, "the body is not a JSON object", "BadRequest")
    return obj


def _check_type(obj: dict[str, Any], kind: ResourceType) -> None:
    api_version, found = obj.get("apiVersion"), obj.get("kind")
    if api_version != kind.group_version or found != kind.kind:
        raise failure(
            400,
            f"the API version in the data ({api_version}) or the kind ({found}) does not match "
            f"the expected {kind.group_version} {kind.kind}",
            "BadRequest",
        )
