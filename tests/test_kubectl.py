"""A real kubectl, which capsync did not write, against the Kubernetes double.

What capsync's users do with kubectl: discovery, get and list pods and WorkerCapabilities
across namespaces, apply the shipped CRD and config/kubernetes manifests, annotate a pod
(which capsync then reads), watch it change, and ask ``auth can-i`` what the shipped RBAC
grants capsync's service account. kubectl speaks HTTPS only and trusts the double through
the kubeconfig's certificate-authority-data. ``--validate=false``: the double serves no
OpenAPI document for kubectl's client-side validation.
"""

from __future__ import annotations

import queue
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from discovery.sources.kubernetes import KubernetesSource
from tests import kubernetes_helpers as helpers
from tests.doubles.kubernetes import KubernetesDouble
from tests.services import missing

MANIFESTS = Path(__file__).resolve().parent.parent / "config" / "kubernetes"
CRD = MANIFESTS / "workercapabilities-crd.yaml"
NAMES = '{range .items[*]}{.metadata.namespace}/{.metadata.name}{"\\n"}{end}'
TIMEOUT = 60  # seconds for one kubectl command: a hang fails, it is not a measure


@dataclass
class Kubectl:
    """kubectl with a kubeconfig for the double: the administrator's, or with
    ``as_capsync`` capsync's service account's."""

    binary: str
    admin: Path
    capsync: Path
    cache: Path

    def command(self, *args: str, as_capsync: bool = False) -> list[str]:
        config = self.capsync if as_capsync else self.admin
        return [self.binary, f"--kubeconfig={config}", f"--cache-dir={self.cache}", *args]

    def __call__(
        self, *args: str, as_capsync: bool = False, ok: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(*args, as_capsync=as_capsync),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        if ok:
            assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result

    def apply(self, *manifests: Path) -> list[str]:
        files = [arg for path in manifests for arg in ("-f", str(path))]
        return self("apply", "--validate=false", *files).stdout.splitlines()


def kubectl_binary() -> str:
    binary = shutil.which("kubectl")
    if binary is None:
        missing("kubectl (Debian: kubernetes-client)")
    return binary


@pytest.fixture
def make_kubectl(tmp_path: Path) -> Callable[[KubernetesDouble], Kubectl]:
    binary = kubectl_binary()
    return lambda double: Kubectl(
        binary,
        double.write_kubeconfig(tmp_path / "admin", admin=True),
        double.write_kubeconfig(tmp_path / "capsync"),
        tmp_path / "cache",
    )


@pytest.fixture
def double() -> Iterator[KubernetesDouble]:
    with KubernetesDouble(crd_installed=False, rbac=None) as running:
        yield running


@pytest.fixture
def kubectl(
    double: KubernetesDouble, make_kubectl: Callable[[KubernetesDouble], Kubectl]
) -> Kubectl:
    return make_kubectl(double)


def test_discovery_serves_the_crd_once_kubectl_applies_it(
    double: KubernetesDouble, kubectl: Kubectl
) -> None:
    served = kubectl("api-resources", "-o", "name").stdout.split()
    assert "pods" in served and "workercapabilities.valkra.io" not in served
    absent = kubectl("get", "wcap", "-A", ok=False)
    assert absent.returncode != 0 and 'resource type "wcap"' in absent.stderr

    assert kubectl.apply(CRD) == [
        "customresourcedefinition.apiextensions.k8s.io/workercapabilities.valkra.io created"
    ]
    listed = kubectl("api-resources", "--api-group=valkra.io").stdout.splitlines()
    assert listed[1].split() == ["workercapabilities", "wcap", "valkra.io/v1", "true",
                                 "WorkerCapabilities"]  # fmt: skip
    established = kubectl(
        "get", "crd", "workercapabilities.valkra.io",
        "-o", "jsonpath={.status.conditions[0].type}",
    )  # fmt: skip
    assert established.stdout == "Established"
    assert kubectl("get", "wcap", "-A", "-o", "name").stdout == ""


def test_apply_of_the_shipped_manifests_creates_them_then_finds_them_unchanged(
    kubectl: Kubectl,
) -> None:
    manifests = [CRD, *sorted(MANIFESTS.glob("*.yaml"))]
    manifests = list(dict.fromkeys(manifests))  # the CRD first, as the README says
    first = kubectl.apply(*manifests)
    assert first and all(line.endswith(" created") for line in first), first
    assert "deployment.apps/capsync created" in first
    again = kubectl.apply(*manifests)
    assert again == [line.replace(" created", " unchanged") for line in first]
    image = kubectl(
        "get", "deployment", "-n", "capsync", "capsync",
        "-o", "jsonpath={.spec.template.spec.containers[0].image}",
    )  # fmt: skip
    assert image.stdout == "capsync:0.1.0"  # the image config/container/build.sh makes


def test_get_lists_pods_and_workercapabilities_across_namespaces(
    double: KubernetesDouble, kubectl: Kubectl
) -> None:
    kubectl.apply(CRD)
    double.put_pod("team-a", "w1", annotations=helpers.annotated())
    double.put_pod("team-b", "w2")
    double.put_resource("team-b", "r1", {"id": "r1"})
    pods = kubectl("get", "pods", "--all-namespaces", "-o", f"jsonpath={NAMES}")
    assert pods.stdout.splitlines() == ["team-a/w1", "team-b/w2"]
    resources = kubectl("get", "workercapabilities", "-A", "-o", f"jsonpath={NAMES}")
    assert resources.stdout.splitlines() == ["team-b/r1"]
    one = kubectl("get", "wcap", "-n", "team-b", "r1", "-o", "jsonpath={.spec.id}")
    assert one.stdout == "r1"
    assert kubectl("get", "pods", "-n", "team-a", "-o", "name").stdout == "pod/w1\n"
    gone = kubectl("get", "pod", "-n", "team-a", "w2", ok=False)
    assert gone.returncode == 1
    assert 'pods "w2" not found' in gone.stderr


def test_a_pod_annotated_with_kubectl_is_seen_by_a_watch_and_by_capsync(
    double: KubernetesDouble, kubectl: Kubectl, tmp_path: Path
) -> None:
    kubectl.apply(CRD, MANIFESTS / "deployment.yaml", MANIFESTS / "rbac-cluster.yaml")
    double.put_pod("workers", "w1")
    template = '{.metadata.name} {.metadata.annotations.worker\\.capabilities}{"\\n"}'
    declared = '{"id": "w1", "staticAnalysisTools": [{"toolName": "semgrep"}]}'
    command = kubectl.command("get", "pods", "-A", "--watch", "-o", f"jsonpath={template}")
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as watch:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_read_lines, args=(watch, lines), daemon=True).start()
        try:
            assert lines.get(timeout=TIMEOUT) == "w1 \n"  # the list, before the watch
            annotated = kubectl("annotate", "pod", "-n", "workers", "w1",
                                f"worker.capabilities={declared}")  # fmt: skip
            assert annotated.stdout == "pod/w1 annotated\n"
            assert lines.get(timeout=TIMEOUT) == f"w1 {declared}\n"  # the watch event
        finally:
            watch.terminate()
    source = KubernetesSource(kubeconfig=str(double.write_kubeconfig(tmp_path / "source")))
    [declaration] = source.list().declarations
    assert (declaration.ref, declaration.fingerprint) == ("workers/w1", declared)
    clash = kubectl("annotate", "pod", "-n", "workers", "w1", "worker.capabilities={}",
                    ok=False)  # fmt: skip
    assert clash.returncode != 0 and "--overwrite is false" in clash.stderr


def _read_lines(process: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.put(line)


CAPSYNC_CAN = [("list", "pods"), ("watch", "pods"), ("get", "workercapabilities"),
               ("watch", "workercapabilities.valkra.io")]  # fmt: skip
CAPSYNC_CANNOT = [("create", "pods"), ("delete", "workercapabilities"), ("list", "secrets")]


@pytest.mark.parametrize(
    ("manifest", "where", "elsewhere"),
    [("rbac-cluster.yaml", "--all-namespaces", None),
     ("rbac-namespace.yaml", "--namespace=workers", "--namespace=default")],
    ids=["cluster", "namespace"],
)  # fmt: skip
def test_auth_can_i_answers_what_the_shipped_rbac_grants_capsync(
    double: KubernetesDouble,
    kubectl: Kubectl,
    tmp_path: Path,
    manifest: str,
    where: str,
    elsewhere: str | None,
) -> None:
    def can(verb: str, resource: str, scope: str) -> str:
        answer = kubectl("auth", "can-i", verb, resource, scope, as_capsync=True, ok=False)
        return answer.stdout.strip()

    kubectl.apply(CRD, MANIFESTS / "deployment.yaml")
    assert can("list", "pods", where) == "no"  # nothing bound yet
    kubectl.apply(MANIFESTS / manifest)
    assert [can(verb, resource, where) for verb, resource in CAPSYNC_CAN] == ["yes"] * 4
    assert [can(verb, resource, where) for verb, resource in CAPSYNC_CANNOT] == ["no"] * 3
    if elsewhere is not None:
        assert can("list", "pods", elsewhere) == "no"
        assert can("list", "pods", "--all-namespaces") == "no"
    assert kubectl("auth", "can-i", "create", "pods", where).stdout.strip() == "yes"  # admin

    # The double enforces what it answers: capsync lists where it may, and is refused
    # with the message naming the manifest elsewhere.
    config = str(double.write_kubeconfig(tmp_path / "source"))
    double.put_pod("workers", "w1", annotations=helpers.annotated())
    scoped = KubernetesSource(kubeconfig=config, namespace="workers")
    assert [d.ref for d in scoped.list().declarations] == ["workers/w1"]
    if elsewhere is not None:
        with pytest.raises(Exception, match=r"HTTP 403 Forbidden"):
            KubernetesSource(kubeconfig=config).list()


def test_get_prints_the_columns_the_shipped_crd_declares(
    double: KubernetesDouble, kubectl: Kubectl
) -> None:
    # The server prints custom resources (a Table from additionalPrinterColumns); as the
    # API server's tableconvertor does, a [*] column shows the first value it finds.
    kubectl.apply(CRD)
    spec = {
        "id": "rust-1",
        "staticAnalysisTools": [{"toolName": "clippy"}, {"toolName": "rustfmt"}],
        "fuzzingTools": [{"toolName": "afl++"}],
    }
    double.put_resource("workers", "r1", spec)
    double.put_resource("workers", "r2", {})
    # The full name: kubectl 1.20 expands a short name from a discovery cache made
    # before the CRD existed, and does not look again.
    lines = kubectl("get", "workercapabilities", "-A", "-o", "wide").stdout.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "WORKER", "STATIC", "SECURITY", "DYNAMIC",
                                "FUZZING", "TESTS", "AGE"]  # fmt: skip
    first, second = (line.split() for line in lines[1:])
    assert first[:-1] == ["workers", "r1", "rust-1", "clippy", "afl++"]
    assert second[:-1] == ["workers", "r2"]
    assert re.fullmatch(r"\d+s", first[-1]) and re.fullmatch(r"\d+s", second[-1])  # ages
    narrow = kubectl("get", "wcap", "-n", "workers", "r1").stdout.splitlines()
    assert narrow[0].split() == ["NAME", "WORKER", "STATIC", "SECURITY", "AGE"]
