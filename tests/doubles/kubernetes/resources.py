"""The resource types the double serves, as its discovery documents describe them.

Pods and WorkerCapabilities are what capsync reads; the others are what kubectl writes
when a user applies config/kubernetes/ (namespace, service account, config map,
deployment, RBAC, the CRD) and what ``kubectl auth can-i`` posts. One table drives the
routes, the discovery documents and the kinds of stored objects, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

READ = ("get", "list", "watch")
WRITE = ("create", "delete", "patch", "update")


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...] = READ + WRITE
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    custom: bool = False  # served from a CustomResourceDefinition

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``plural.group`` as RBAC messages and CRD names spell it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def singular(self) -> str:
        return self.kind.lower()

    def discovery(self) -> dict[str, object]:
        """This type's entry in its group version's APIResourceList."""
        entry: dict[str, object] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        return entry


PODS = "pods"
RESOURCES = "workercapabilities"
NAMESPACES = "namespaces"
CRDS = "customresourcedefinitions"
ACCESS_REVIEWS = "selfsubjectaccessreviews"
CRD_NAME = "workercapabilities.valkra.io"

TYPES = {
    t.plural: t
    for t in (
        ResourceType("", "v1", PODS, "Pod", True, short_names=("po",), categories=("all",)),
        ResourceType("", "v1", NAMESPACES, "Namespace", False, short_names=("ns",)),
        ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, short_names=("sa",)),
        ResourceType("", "v1", "configmaps", "ConfigMap", True, short_names=("cm",)),
        ResourceType(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            True,
            short_names=("deploy",),
            categories=("all",),
        ),
        ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
        ResourceType(
            "rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False
        ),
        ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
        ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
        ResourceType(
            "apiextensions.k8s.io",
            "v1",
            CRDS,
            "CustomResourceDefinition",
            False,
            short_names=("crd", "crds"),
        ),
        ResourceType(
            "authorization.k8s.io",
            "v1",
            ACCESS_REVIEWS,
            "SelfSubjectAccessReview",
            False,
            verbs=("create",),
        ),
        ResourceType(
            "valkra.io",
            "v1",
            RESOURCES,
            "WorkerCapabilities",
            True,
            short_names=("wcap",),
            categories=("capsync",),
            custom=True,
        ),
    )
}
STORED = [plural for plural in TYPES if plural != ACCESS_REVIEWS]


def served(crd_installed: bool) -> list[ResourceType]:
    """The types the API serves now: WorkerCapabilities only once its CRD is installed."""
    return [t for t in TYPES.values() if crd_installed or not t.custom]


def lookup(group_version: str, plural: str, crd_installed: bool) -> ResourceType | None:
    for t in served(crd_installed):
        if t.group_version == group_version and t.plural == plural:
            return t
    return None
