"""The kubernetes source's informer-style cache, its failures and its lifecycle, through
the real client against the API double."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from config.errors import SourceError
from discovery.normalise import Normaliser
from discovery.sources.kubernetes import KubernetesSource
from tests import kubernetes_helpers as helpers
from tests.doubles.kubernetes import KubernetesDouble
from tests.kubernetes_helpers import double, make_source  # noqa: F401 - fixtures


def lists(double: KubernetesDouble) -> int:
    return sum("watch=" not in path.lower() for _, path in list(double.requests))


def test_at_10000_pods_a_steady_cycle_costs_no_request_and_status_updates_are_silent(
    double: KubernetesDouble, make_source: Callable[..., KubernetesSource]
) -> None:
    for i in range(10_000):
        double.put_pod(
            f"ns-{i % 10}", f"w{i:05d}", annotations=helpers.annotated(), labels={"role": "worker"}
        )
    source = make_source(label_selector="role=worker")
    running = helpers.Watching(source)
    running.expect("kubernetes pod listed", timeout=60)
    running.expect("kubernetes workercapabilities listed")
    helpers.eventually(lambda: helpers.watches(double) >= 2)
    before = len(double.requests)
    assert lists(double) == 21  # 20 pages of pods, one of resources: once

    steady = source.list()
    assert len(steady.declarations) == 10_000
    for _ in range(3):
        # answered from the cache, and the very same listing: nothing to walk or validate
        assert source.list() is steady
    assert len(double.requests) == before

    # An update that changes neither the declaration nor the pod's readiness is silent.
    double.put_pod("ns-1", "w00001", annotations=helpers.annotated(), labels={"role": "worker"})
    # Relabelled out of the selector: the API server sends DELETED, and it leaves.
    double.put_pod("ns-2", "w00002", annotations=helpers.annotated(), labels={"role": "retired"})
    running.expect("kubernetes pod ns-2/w00002 DELETED")
    assert not [note for note in running.seen if "w00001" in note]
    after = source.list()
    refs = {d.ref for d in after.declarations}
    assert len(refs) == 9_999 and "ns-2/w00002" not in refs and "ns-1/w00001" in refs
    # A changed declaration is a new listing that carries it.
    double.put_pod(
        "ns-3",
        "w00003",
        annotations=helpers.annotated('{"id": "renamed"}'),
        labels={"role": "worker"},
    )
    running.expect("kubernetes pod ns-3/w00003 MODIFIED")
    changed = source.list()
    assert changed is not after
    texts = {d.ref: d.fingerprint for d in changed.declarations}
    assert texts["ns-3/w00003"] == '{"id": "renamed"}' and len(texts) == 9_999
    assert lists(double) == 21
    assert running.finish() < 2.0


def test_the_declarations_fingerprint_is_their_raw_text_so_validation_is_reused(
    double: KubernetesDouble, make_source: Callable[..., KubernetesSource]
) -> None:
    double.put_pod("ns", "w", annotations=helpers.annotated())
    double.put_resource("ns", "r", {"fuzzingTools": [{"toolName": "afl++"}]})
    source, normaliser = make_source(), Normaliser()
    first, _ = normaliser.normalise(source.list(), "kubernetes")
    double.put_pod("ns", "w", annotations=helpers.annotated(), ready=False)  # status only
    listing = source.list()
    assert [d.fingerprint for d in listing.declarations] == [
        helpers.annotated()["worker.capabilities"],
        '{"fuzzingTools": [{"toolName": "afl++"}]}',
    ]
    again, _ = normaliser.normalise(listing, "kubernetes")
    # not validated again (the pod's readiness, its health, rides beside the declaration)
    assert all(a.caps is b.caps for a, b in zip(first, again, strict=True))
    assert [f.declaration.health.status for f in again] == ["critical", "passing"]


def test_close_ends_the_watch_threads_within_two_seconds(
    make_source: Callable[..., KubernetesSource], double: KubernetesDouble
) -> None:
    source = make_source()
    running = helpers.Watching(source)
    helpers.eventually(lambda: helpers.watches(double) >= 2)
    alive = {t.name for t in threading.enumerate() if "reflector" in t.name}
    assert alive == {"kubernetes-reflector-pod", "kubernetes-reflector-workercapabilities"}
    source.close()  # the daemon's reload: the blocking watches are cut
    assert not [t for t in threading.enumerate() if "reflector" in t.name]
    assert running.finish() < 2.0


def test_a_watch_that_ends_at_once_is_a_failure_and_backs_off(
    double: KubernetesDouble,
    make_source: Callable[..., KubernetesSource],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # client-go tools/cache/reflector.go: "very short watch" (under a second, no event).
    double.cut_watches = True
    source = make_source(resources=False)
    running = helpers.Watching(source)
    running.expect("kubernetes pod listed")
    helpers.eventually(lambda: helpers.out_of_sync(source))
    with pytest.raises(SourceError, match="very short watch"):
        source.list()
    threading.Event().wait(1.5)
    assert running.finish() < 2.0
    assert helpers.watches(double) <= 2  # at 0 s and after the 1 s backoff: no tight loop
    assert any(
        r.getMessage() == "watch_failed" and "very short watch" in r.fields["error"]
        for r in caplog.records
    )


@pytest.mark.parametrize(
    ("namespace", "missing", "manifest"),
    [
        (
            None,
            "list pods at the cluster scope (namespace unset: all namespaces)",
            "rbac-cluster.yaml",
        ),
        ("other", 'list pods in the namespace "other"', "rbac-namespace.yaml"),
    ],
    ids=["cluster-wide", "other-namespace"],
)
def test_a_403_names_the_missing_permission_and_warns_once(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    namespace: str | None,
    missing: str,
    manifest: str,
) -> None:
    with KubernetesDouble(rbac="rbac-namespace.yaml") as double:
        kubeconfig = str(double.write_kubeconfig(tmp_path / "kubeconfig"))
        source = KubernetesSource(kubeconfig=kubeconfig, namespace=namespace)
        for _ in range(2):
            with pytest.raises(SourceError) as caught:
                source.list()
            message = str(caught.value)
            assert "HTTP 403 Forbidden" in message and f"missing permission: {missing}" in message
            assert manifest in message
        [warning] = [r for r in caplog.records if r.getMessage() == "kubernetes_forbidden"]
        assert warning.fields["missing"] == missing and manifest in warning.fields["hint"]
        granted = KubernetesSource(kubeconfig=kubeconfig, namespace="workers")
        assert granted.list().declarations == []


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (200, "<html><body>Sign in</body></html>", "text/html"),
        (200, '{"apiVersion": "v1", "kind": "PodList", "items": [', "application/json"),
        (200, '{"kind": "Status", "status": "Success"}', "application/json"),
        (200, '{"metadata": {}, "items": null}', "application/json"),
        (200, '{"metadata": {}, "items": ["x"]}', "application/json"),
        (404, "404 page not found\n", "text/plain"),
        (503, "<html>upstream unavailable</html>", "text/html"),
        (403, "<html>proxy says no</html>", "text/html"),
    ],
    ids=["html", "truncated", "status", "null-items", "odd-items", "404", "503", "403"],
)
def test_only_a_clean_list_is_data(
    double: KubernetesDouble,
    make_source: Callable[..., KubernetesSource],
    status: int,
    body: str,
    content_type: str,
) -> None:
    double.put_pod("ns", "w", annotations=helpers.annotated())
    double.fail_requests(status, body=body, content_type=content_type)
    with pytest.raises(SourceError, match=r"source kubernetes: cannot list pod"):
        make_source().list()
    double.clear_faults()
    assert [d.ref for d in make_source().list().declarations] == ["ns/w"]


def test_a_list_failing_on_its_second_page_fails_the_whole_listing(
    double: KubernetesDouble, make_source: Callable[..., KubernetesSource]
) -> None:
    for i in range(501):
        double.put_pod("ns", f"w{i:04d}", annotations=helpers.annotated())
    source = make_source(resources=False)
    first = double.store.list("pods", None, "", 500, None)
    assert "continue" in first["metadata"]
    real_list = double.store.list

    def expire_on_continue(*args: object) -> dict[str, object]:
        if args[4] and not double.store.compacted:  # between the pages: a write, then
            double.store.put("pods", "ns", "late", {})  # etcd compacts the history
            double.store.compact()
        return real_list(*args)  # type: ignore[arg-type]

    double.store.list = expire_on_continue  # type: ignore[method-assign]
    with pytest.raises(SourceError, match=r"HTTP 410 .*continue parameter is too old"):
        source.list()


def test_a_daemon_style_watcher_logs_its_failures_and_keeps_going(
    double: KubernetesDouble,
    make_source: Callable[..., KubernetesSource],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    double.fail_requests(500, count=1)
    running = helpers.Watching(make_source(resources=False))
    running.expect("kubernetes pod relisted after an error", timeout=5)
    double.put_pod("ns", "w", annotations=helpers.annotated())
    running.expect("kubernetes pod ns/w ADDED")
    assert running.finish() < 2.0
    assert any("watch_failed" in r.getMessage() for r in caplog.records)
