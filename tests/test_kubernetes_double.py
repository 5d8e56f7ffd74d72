"""The Kubernetes API double answers as the API server does, driven over real HTTP.

Every test cites the upstream source it mirrors (kubernetes/kubernetes, staging paths
under k8s.io/...), so a difference can be checked against the real thing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.doubles.kubernetes import KubernetesDouble

PODS = "/api/v1/pods"
RESOURCES = "/apis/valkra.io/v1/workercapabilities"


@pytest.fixture
def double() -> Iterator[KubernetesDouble]:
    with KubernetesDouble() as running:
        yield running


def get(
    double: KubernetesDouble, path: str, *, stream: bool = False, **params: str
) -> requests.Response:
    return requests.get(
        double.url + path,
        params=params,
        stream=stream,
        timeout=10,
        headers={"Authorization": f"Bearer {double.token}"},
        verify=str(double.ca_file),
    )


def is_watch(response: requests.Response) -> bool:
    return response.headers.get("Transfer-Encoding") == "chunked"


@pytest.mark.parametrize("value", ["true", "True", "TRUE", "1", "t", "yes", ""])
def test_a_boolean_parameter_is_true_unless_absent_0_or_false(
    double: KubernetesDouble, value: str
) -> None:
    # k8s.io/apimachinery/pkg/runtime/conversion.go, Convert_Slice_string_To_bool: only an
    # absent parameter, "0" or "false" (any case) is false; so the watch=True that older
    # Python clients send (kubernetes-client/python kubernetes/base/watch/watch.py sets
    # kwargs["watch"] = True, rendered by str()) is a watch.
    response = get(double, PODS, stream=True, watch=value, timeoutSeconds="1")
    assert response.status_code == 200 and is_watch(response)
    response.close()


@pytest.mark.parametrize("value", ["false", "False", "FALSE", "0", None])
def test_false_0_or_absent_is_a_list(double: KubernetesDouble, value: str | None) -> None:
    params = {} if value is None else {"watch": value}
    response = get(double, PODS, **params)
    assert response.status_code == 200 and not is_watch(response)
    assert response.json()["kind"] == "PodList"


def read_events(
    response: requests.Response, count: int, out: list[dict[str, Any]], done: threading.Event
) -> None:
    for line in response.iter_lines():
        if line:
            out.append(json.loads(line))
            if len(out) == count:
                break
    done.set()


def test_a_watch_sees_an_object_leave_and_enter_its_label_selector(
    double: KubernetesDouble,
) -> None:
    # k8s.io/apiserver/pkg/storage/cacher/cache_watcher.go (convertToWatchEvent) and
    # storage/etcd3/watcher.go (transform): an update that makes an object stop matching
    # the watcher's filter is sent as DELETED with the previous object; one that makes it
    # match is ADDED; one that never matches is not sent.
    start = double.put_pod("ns", "w", labels={"role": "worker"})["metadata"]["resourceVersion"]
    response = get(
        double,
        PODS,
        stream=True,
        watch="true",
        labelSelector="role=worker",
        resourceVersion=start,
        timeoutSeconds="5",
    )
    events: list[dict[str, Any]] = []
    done = threading.Event()
    threading.Thread(target=read_events, args=(response, 3, events, done), daemon=True).start()
    double.put_pod("ns", "w", labels={"role": "db"})
    double.put_pod("ns", "other", labels={"role": "db"})
    double.put_pod("ns", "w", labels={"role": "worker"})
    double.put_pod("ns", "w", labels={"role": "worker"}, ready=False)
    assert done.wait(5), events
    response.close()
    assert [(e["type"], e["object"]["metadata"]["labels"]["role"]) for e in events] == [
        ("DELETED", "worker"),
        ("ADDED", "worker"),
        ("MODIFIED", "worker"),
    ]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(start)


def test_a_group_without_its_crd_is_a_plain_text_404_and_a_starting_one_503(
    double: KubernetesDouble,
) -> None:
    # Nothing serves /apis/valkra.io/... without the CRD: the request falls through to
    # k8s.io/apiserver/pkg/server/mux/pathrecorder.go's notFoundHandler, Go's
    # http.NotFound: "404 page not found" as text/plain, not a Status.
    double.crd_installed = False
    response = get(double, RESOURCES)
    assert response.status_code == 404
    assert response.text == "404 page not found\n"
    assert response.headers["Content-Type"].startswith("text/plain")
    # A known group with an unknown resource is a Status (the group's own handler).
    assert get(double, "/api/v1/nodez").json()["reason"] == "NotFound"
    # k8s.io/apiextensions-apiserver/pkg/apiserver/customresource_handler.go answers
    # serverStartingError(), a 503 ServiceUnavailable, until its CRD informer has synced.
    double.crd_installed, double.crd_starting = True, True
    response = get(double, RESOURCES)
    assert response.status_code == 503
    assert response.json()["reason"] == "ServiceUnavailable"


def test_outside_the_callers_namespaces_the_answer_is_a_forbidden_status() -> None:
    # k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go (forbiddenMessage)
    # and k8s.io/apimachinery/pkg/api/errors NewForbidden: reason Forbidden, details with
    # the group and resource, a message naming the user, verb, resource and scope.
    with KubernetesDouble(namespaces={"workers"}) as double:
        assert get(double, "/api/v1/namespaces/workers/pods").status_code == 200
        cluster = get(double, PODS).json()
        assert (cluster["code"], cluster["reason"]) == (403, "Forbidden")
        assert cluster["details"] == {"kind": "pods"}
        assert cluster["message"] == (
            'pods is forbidden: User "system:serviceaccount:capsync:capsync" cannot list '
            'resource "pods" in API group "" at the cluster scope'
        )
        other = get(
            double, "/apis/valkra.io/v1/namespaces/other/workercapabilities", watch="1"
        ).json()
        assert other["details"] == {"group": "valkra.io", "kind": "workercapabilities"}
        assert other["message"].endswith(
            'cannot watch resource "workercapabilities" in API group "valkra.io" in the '
            'namespace "other"'
        )


def test_a_continue_token_from_before_a_compaction_is_410_expired(
    double: KubernetesDouble,
) -> None:
    # k8s.io/apiserver/pkg/storage/etcd3/store.go (GetList): a continue token whose
    # resourceVersion was compacted is 410 ResourceExpired; the client must list afresh.
    for name in ("a", "b"):
        double.put_pod("ns", name)
    token = get(double, PODS, limit="1").json()["metadata"]["continue"]
    double.put_pod("ns", "c")
    double.compact()
    status = get(double, PODS, limit="1", **{"continue": token}).json()
    assert (status["code"], status["reason"]) == (410, "Expired")
    assert "continue parameter is too old" in status["message"]


def test_items_of_a_built_in_list_carry_no_kind_but_custom_ones_do(
    double: KubernetesDouble,
) -> None:
    # Built-in lists are encoded from typed Go lists whose items have an empty TypeMeta
    # (only the list has kind and apiVersion); custom resources are unstructured objects
    # and keep theirs (k8s.io/apiextensions-apiserver, unstructured list encoding).
    double.put_pod("ns", "p")
    double.put_resource("ns", "r", {})
    [pod] = get(double, PODS).json()["items"]
    assert "kind" not in pod and "apiVersion" not in pod
    [resource] = get(double, RESOURCES).json()["items"]
    assert (resource["kind"], resource["apiVersion"]) == ("WorkerCapabilities", "valkra.io/v1")
    # A watch event's object does carry them.
    response = get(double, PODS, stream=True, watch="true", resourceVersion="0", timeoutSeconds="1")
    event = json.loads(next(response.iter_lines()))
    response.close()
    assert event["object"]["kind"] == "Pod"


@pytest.mark.parametrize(
    ("param", "value"),
    [("fieldSelector", "status.phase=Running"), ("resourceVersionMatch", "NotOlderThan")],
)
def test_a_parameter_the_double_does_not_implement_is_refused_not_ignored(
    double: KubernetesDouble, param: str, value: str
) -> None:
    response = get(double, PODS, **{param: value})
    assert response.status_code == 400
    assert "does not implement" in response.json()["message"]
