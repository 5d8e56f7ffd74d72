"""Who a bearer token is, and what RBAC lets them do, from the objects in the store.

Two identities, as a cluster has them: an administrator (group system:masters, allowed
everything, as kubectl's usual kubeconfig) and capsync's service account. The service
account's rights are what the stored ClusterRoleBindings and RoleBindings grant it (the
RBAC authorizer's rules: apiGroups, resources, verbs and resourceNames, "*" matching
all), which is what ``kubectl auth can-i`` asks through a SelfSubjectAccessReview.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .store import Store

RBAC = ("clusterroles", "clusterrolebindings", "roles", "rolebindings")


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...]

    @classmethod
    def service_account(cls, namespace: str, name: str) -> User:
        return cls(
            f"system:serviceaccount:{namespace}:{name}",
            (
                "system:serviceaccounts",
                f"system:serviceaccounts:{namespace}",
                "system:authenticated",
            ),
        )

    def is_subject(self, subject: dict[str, Any]) -> bool:
        kind, name = subject.get("kind"), subject.get("name")
        if kind == "ServiceAccount":
            return self.name == f"system:serviceaccount:{subject.get('namespace')}:{name}"
        if kind == "User":
            return self.name == name
        return kind == "Group" and name in self.groups


ADMIN = User("kubernetes-admin", ("system:masters", "system:authenticated"))


@dataclass(frozen=True)
class Attributes:
    """One request as the authorizer sees it; namespace "" is the cluster scope."""

    verb: str
    group: str
    resource: str
    namespace: str
    name: str = ""


def allowed(store: Store, user: User, attrs: Attributes) -> bool:
    if "system:masters" in user.groups:
        return True
    with store.cond:
        objects = {kind: list(store.objects[kind].values()) for kind in RBAC}
    cluster_roles = {o["metadata"]["name"]: o for o in objects["clusterroles"]}
    roles = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects["roles"]}
    for binding in objects["clusterrolebindings"]:
        if _binds(binding, user) and _grants(cluster_roles.get(binding["roleRef"]["name"]), attrs):
            return True
    for binding in objects["rolebindings"]:
        namespace = binding["metadata"]["namespace"]
        if namespace != attrs.namespace or not _binds(binding, user):
            continue
        ref = binding["roleRef"]
        role = (
            cluster_roles.get(ref["name"])
            if ref.get("kind") == "ClusterRole"
            else roles.get((namespace, ref["name"]))
        )
        if _grants(role, attrs):
            return True
    return False


def _binds(binding: dict[str, Any], user: User) -> bool:
    return any(user.is_subject(s) for s in binding.get("subjects") or [])


def _grants(role: dict[str, Any] | None, attrs: Attributes) -> bool:
    return role is not None and any(_rule_allows(r, attrs) for r in role.get("rules") or [])


def _rule_allows(rule: dict[str, Any], attrs: Attributes) -> bool:
    def has(values: list[str] | None, value: str) -> bool:
        return "*" in (values or []) or value in (values or [])

    names = rule.get("resourceNames") or []
    return (
        has(rule.get("verbs"), attrs.verb)
        and has(rule.get("apiGroups"), attrs.group)
        and has(rule.get("resources"), attrs.resource)
        and (not names or attrs.name in names)
    )
