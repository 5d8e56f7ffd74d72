"""The shipped Kubernetes manifests, read as an operator applies them: each documented
setup (cluster-wide, one namespace) grants exactly what its configuration needs, checked
against the API double holding those RBAC objects (its authorizer evaluates them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from config.errors import SourceError
from config.loading import load
from daemon.api_settings import ApiSettings
from daemon.settings_model import SETTINGS
from discovery.sources.kubernetes import KubernetesSource, KubernetesSourceSettings
from tests.conftest import ROOT
from tests.container_image import IMAGE
from tests.doubles.kubernetes import KubernetesDouble
from tests.kubernetes_helpers import annotated

MANIFESTS = ROOT / "config" / "kubernetes"


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


def deployment_config(tmp_path: Path, *, single_namespace: bool) -> KubernetesSourceSettings:
    """The ConfigMap's capsync.toml, as shipped or with its namespace line uncommented."""
    text = one(documents("deployment.yaml"), "ConfigMap")["data"]["capsync.toml"]
    if single_namespace:
        text = text.replace('# namespace = "workers"', 'namespace = "workers"')
    path = tmp_path / "capsync.toml"
    path.write_text(text)
    [source] = load(SETTINGS, path, environ={}).sources
    assert isinstance(source, KubernetesSourceSettings)
    return source


def service_account() -> tuple[str, str]:
    docs = documents("deployment.yaml")
    account = one(docs, "ServiceAccount")["metadata"]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["name"]
    return account["namespace"], account["name"]


def lists_without_403(tmp_path: Path, rbac: str, settings: KubernetesSourceSettings) -> list[str]:
    """What capsync, with the deployment's service account, lists from a cluster where an
    administrator applied the CRD, deployment.yaml and ``rbac``: the double grants the
    account what those RBAC objects grant it, nothing else."""
    with KubernetesDouble(crd_installed=False, rbac=None) as double:
        for manifest in ("workercapabilities-crd.yaml", "deployment.yaml", rbac):
            double.apply(MANIFESTS / manifest)
        double.put_pod("workers", "w1", annotations=annotated())
        double.put_resource("workers", "r1", {})
        kubeconfig = str(double.write_kubeconfig(tmp_path / "kubeconfig"))
        source = KubernetesSource(
            kubeconfig=kubeconfig,
            namespace=settings.namespace,
            label_selector=settings.label_selector,
        )
        return [d.ref for d in source.list().declarations]


def test_the_cluster_wide_setup_binds_a_cluster_role_to_the_deployments_account(
    tmp_path: Path,
) -> None:
    docs = documents("rbac-cluster.yaml")
    assert {d["kind"] for d in docs} == {"ClusterRole", "ClusterRoleBinding"}
    settings = deployment_config(tmp_path, single_namespace=False)
    assert settings.namespace is None  # the default: every namespace
    namespace, name = service_account()
    subject = {"kind": "ServiceAccount", "name": name, "namespace": namespace}
    assert one(docs, "ClusterRoleBinding")["subjects"] == [subject]
    assert lists_without_403(tmp_path, "rbac-cluster.yaml", settings) == [
        "workers/w1",
        "workers/workercapabilities/r1",
    ]


def test_the_single_namespace_setup_names_one_namespace_everywhere(tmp_path: Path) -> None:
    docs = documents("rbac-namespace.yaml")
    assert {d["kind"] for d in docs} == {"Namespace", "Role", "RoleBinding"}
    names = {
        one(docs, "Namespace")["metadata"]["name"],
        one(docs, "Role")["metadata"]["namespace"],
        one(docs, "RoleBinding")["metadata"]["namespace"],
    }
    settings = deployment_config(tmp_path, single_namespace=True)
    assert names == {settings.namespace} == {"workers"}
    assert lists_without_403(tmp_path, "rbac-namespace.yaml", settings) == [
        "workers/w1",
        "workers/workercapabilities/r1",
    ]


def test_a_scope_the_bindings_do_not_cover_is_a_403_naming_the_permission(
    tmp_path: Path,
) -> None:
    # The old shipped state: RoleBindings, but the default cluster-wide configuration.
    settings = deployment_config(tmp_path, single_namespace=False)
    with pytest.raises(SourceError, match=r"missing permission: list pods at the cluster scope"):
        lists_without_403(tmp_path, "rbac-namespace.yaml", settings)


def test_the_deployment_runs_non_root_with_probes_on_healthz_and_readyz(
    tmp_path: Path,
) -> None:
    docs = documents("deployment.yaml")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # never two writers
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    [port] = container["ports"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    config = Path(tmp_path / "capsync.toml")
    config.write_text(one(docs, "ConfigMap")["data"]["capsync.toml"])
    settings = load(SETTINGS, config, environ={})
    assert settings.daemon.listen == f"0.0.0.0:{port['containerPort']}"
    assert settings.registries[0].owner == "capsync-k8s"  # not the pod's changing name
    env = {e["name"]: e["value"] for e in container["env"]}
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["config"]
    assert env["CAPSYNC_CONFIG"] == f"{mount}/capsync.toml"


def test_the_deployment_runs_the_image_the_build_makes_as_it_is_made() -> None:
    """config/container/build.sh's default tag, its USER and its state volume."""
    pod = one(documents("deployment.yaml"), "Deployment")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == IMAGE
    context = pod["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (65532, 65532)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    [state] = [v for v in pod["volumes"] if v["name"] == "state"]
    assert mounts["state"] == "/var/lib/capsync" and "emptyDir" in state


def test_the_deployment_listens_off_loopback_with_an_api_token_from_a_secret(
    tmp_path: Path,
) -> None:
    """Without a token the daemon refuses a listener that is not loopback."""
    docs = documents("deployment.yaml")
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    config = tmp_path / "capsync.toml"
    config.write_text(one(docs, "ConfigMap")["data"]["capsync.toml"])
    token_file = ApiSettings.of(load(SETTINGS, config, environ={})).token_file
    assert token_file is not None
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    secret = volumes[mounts[str(token_file.parent)]]["secret"]
    assert secret["secretName"] == "capsync-api-token"
    assert token_file.name == "token"
