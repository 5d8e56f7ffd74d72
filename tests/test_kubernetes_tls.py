"""capsync reaches the API server over TLS, trusting only the cluster CA it is given.

Both ways in are covered: a kubeconfig's certificate-authority-data, and the in-cluster
service account (token, ca.crt and namespace files, KUBERNETES_SERVICE_HOST/PORT), which
is how the shipped deployment runs the source. A server whose certificate that CA did
not sign is refused before any request is sent, so the token never leaves.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from kubernetes.config import incluster_config

from config.errors import SourceError
from discovery.sources.kubernetes import KubernetesSource
from tests import kubernetes_helpers as helpers
from tests.doubles.kubernetes import KubernetesDouble
from tests.doubles.kubernetes.tls import ClusterCA
from tests.kubernetes_helpers import double  # noqa: F401  (a fixture)

Setup = Callable[[KubernetesDouble, Path, pytest.MonkeyPatch, bytes | None], KubernetesSource]


def from_kubeconfig(
    double: KubernetesDouble, tmp: Path, monkeypatch: pytest.MonkeyPatch, ca: bytes | None
) -> KubernetesSource:
    path = double.write_kubeconfig(tmp / "kubeconfig")
    if ca is not None:
        config = yaml.safe_load(path.read_text())
        config["clusters"][0]["cluster"]["certificate-authority-data"] = ClusterCA.encode(ca)
        path.write_text(yaml.safe_dump(config))
    return KubernetesSource(kubeconfig=str(path))


def in_cluster(
    double: KubernetesDouble, tmp: Path, monkeypatch: pytest.MonkeyPatch, ca: bytes | None
) -> KubernetesSource:
    """A pod's view: the kubelet's files at their place, the service's environment."""
    account = tmp / "serviceaccount"
    for name, value in double.write_service_account(account).items():
        monkeypatch.setenv(name, value)
    if ca is not None:
        (account / "ca.crt").write_bytes(ca)
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(account / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(account / "ca.crt"))
    return KubernetesSource(kubeconfig=None, in_pod=True)


WAYS_IN = pytest.mark.parametrize(
    "setup", [from_kubeconfig, in_cluster], ids=["kubeconfig", "in-cluster"]
)


@WAYS_IN
def test_capsync_lists_and_watches_through_the_cluster_ca(
    double: KubernetesDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup: Setup
) -> None:
    double.put_pod("workers", "w1", annotations=helpers.annotated())
    source = setup(double, tmp_path, monkeypatch, None)
    assert [d.ref for d in source.list().declarations] == ["workers/w1"]
    watching = helpers.Watching(source)
    try:
        helpers.eventually(lambda: helpers.watches(double) >= 2)
        double.put_pod("workers", "w2", annotations=helpers.annotated())
        watching.expect("kubernetes pod workers/w2 ADDED")
        assert sorted(d.ref for d in source.list().declarations) == ["workers/w1", "workers/w2"]
    finally:
        watching.finish()
    # Every request carried the service account's token over TLS.
    assert double.requests


@WAYS_IN
def test_capsync_refuses_a_server_the_cluster_ca_did_not_sign(
    double: KubernetesDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup: Setup
) -> None:
    double.put_pod("workers", "w1", annotations=helpers.annotated())
    source = setup(double, tmp_path, monkeypatch, ClusterCA().pem)
    with pytest.raises(SourceError, match=r"CERTIFICATE_VERIFY_FAILED"):
        source.list()
    watching = helpers.Watching(source)
    try:
        with pytest.raises(SourceError, match=r"CERTIFICATE_VERIFY_FAILED"):
            source.list()  # the watch's caches never sync
    finally:
        watching.finish()
    assert double.requests == []  # no request, so no token, reached the server


def test_an_http_url_for_the_api_server_is_reported_as_such(
    double: KubernetesDouble, tmp_path: Path
) -> None:
    path = double.write_kubeconfig(tmp_path / "kubeconfig")
    config = yaml.safe_load(path.read_text())
    config["clusters"][0]["cluster"]["server"] = double.url.replace("https://", "http://")
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(SourceError) as failure:
        KubernetesSource(kubeconfig=str(path)).list()
    assert str(failure.value) == (
        "source kubernetes: cannot list pod (GET /api/v1/pods): HTTP 400 Bad Request: "
        "Client sent an HTTP request to an HTTPS server."
    )
