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
    with KubernetesDouble(rbac="rbac-namespace.yaml") as double:
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


def call(
    double: KubernetesDouble,
    method: str,
    path: str,
    body: Any = None,
    *,
    admin: bool = True,
    content_type: str = "application/json",
    **params: str,
) -> requests.Response:
    token = double.admin_token if admin else double.token
    return requests.request(
        method,
        double.url + path,
        params=params,
        data=None if body is None else json.dumps(body),
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
        timeout=10,
        verify=str(double.ca_file),
    )


def config_map(name: str, namespace: str = "default", **data: str) -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


CONFIG_MAPS = "/api/v1/namespaces/default/configmaps"


def test_create_answers_201_then_409_already_exists(double: KubernetesDouble) -> None:
    # k8s.io/apiserver/pkg/registry/generic/registry/store.go (Create): a taken name is
    # StatusReasonAlreadyExists, 409, naming the resource and the object.
    created = call(double, "POST", CONFIG_MAPS, config_map("c", a="1"))
    assert created.status_code == 201
    assert created.json()["metadata"]["uid"] and created.json()["data"] == {"a": "1"}
    again = call(double, "POST", CONFIG_MAPS, config_map("c"))
    assert again.status_code == 409
    assert (again.json()["reason"], again.json()["message"]) == (
        "AlreadyExists",
        'configmaps "c" already exists',
    )


def test_create_in_a_namespace_that_does_not_exist_is_404(double: KubernetesDouble) -> None:
    # plugin/pkg/admission/namespace/lifecycle: NewNotFound(namespaces, name).
    response = call(
        double, "POST", "/api/v1/namespaces/nowhere/configmaps", config_map("c", "nowhere")
    )
    assert response.status_code == 404
    assert response.json()["message"] == 'namespaces "nowhere" not found'


def test_get_of_a_missing_object_is_a_not_found_status(double: KubernetesDouble) -> None:
    # k8s.io/apimachinery/pkg/api/errors/errors.go (NewNotFound): group.resource "name".
    double.put_resource("ns", "r", {})
    response = call(double, "GET", "/apis/valkra.io/v1/namespaces/ns/workercapabilities/x")
    assert response.status_code == 404
    status = response.json()
    assert status["message"] == 'workercapabilities.valkra.io "x" not found'
    assert status["details"] == {"name": "x", "kind": "workercapabilities", "group": "valkra.io"}


def test_a_merge_patch_merges_deletes_with_null_and_checks_the_resource_version(
    double: KubernetesDouble,
) -> None:
    # RFC 7386 (k8s.io/apiserver/pkg/endpoints/handlers/patch.go, jsonpatch.MergePatch); a
    # stale metadata.resourceVersion in the patch is a 409 Conflict.
    double.put_pod("ns", "w", annotations={"keep": "1", "drop": "2"})
    path = "/api/v1/namespaces/ns/pods/w"
    patch = {"metadata": {"annotations": {"drop": None, "new": "3"}}}
    patched = call(double, "PATCH", path, patch, content_type="application/merge-patch+json")
    assert patched.status_code == 200
    assert patched.json()["metadata"]["annotations"] == {"keep": "1", "new": "3"}
    stale = {"metadata": {"resourceVersion": "1", "labels": {"a": "b"}}}
    conflict = call(double, "PATCH", path, stale, content_type="application/merge-patch+json")
    assert conflict.status_code == 409 and conflict.json()["reason"] == "Conflict"


def test_a_strategic_merge_patch_of_a_custom_resource_is_415(double: KubernetesDouble) -> None:
    # patch.go: custom resources accept json-patch, merge-patch and apply-patch only.
    double.put_resource("ns", "r", {})
    response = call(
        double,
        "PATCH",
        "/apis/valkra.io/v1/namespaces/ns/workercapabilities/r",
        {"spec": {"id": "x"}},
        content_type="application/strategic-merge-patch+json",
    )
    assert response.status_code == 415
    assert response.json()["reason"] == "UnsupportedMediaType"


def test_field_selectors_on_name_and_namespace(double: KubernetesDouble) -> None:
    # Every type serves metadata.name and metadata.namespace (DefaultClusterScopedAttr).
    double.put_pod("a", "w1")
    double.put_pod("b", "w1")
    double.put_pod("b", "w2")
    names = get(double, PODS, fieldSelector="metadata.name=w1,metadata.namespace!=a").json()
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in names["items"]] == [
        ("b", "w1")
    ]


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_bearer_scheme_is_read_in_any_case(double: KubernetesDouble, scheme: str) -> None:
    # k8s.io/apiserver/pkg/authentication/request/bearertoken: strings.ToLower(parts[0]);
    # the Python client's in-cluster loader sends "bearer".
    response = requests.get(
        double.url + PODS,
        headers={"Authorization": f"{scheme} {double.token}"},
        timeout=10,
        verify=str(double.ca_file),
    )
    assert response.status_code == 200


def test_capsync_s_service_account_may_read_but_not_write(double: KubernetesDouble) -> None:
    # The RBAC authorizer's 403: what was refused, to whom, where.
    refused = call(double, "POST", CONFIG_MAPS, config_map("c"), admin=False)
    assert refused.status_code == 403
    assert refused.json()["message"] == (
        'configmaps is forbidden: User "system:serviceaccount:capsync:capsync" cannot '
        'create resource "configmaps" in API group "" in the namespace "default"'
    )
    assert call(double, "GET", PODS, admin=False).status_code == 200


def test_a_client_that_does_not_trust_the_ca_gets_no_answer(double: KubernetesDouble) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(double.url + PODS, timeout=10)  # the system CAs, not the cluster's
    assert double.requests == []


def test_plain_http_on_the_https_port_gets_go_s_400(double: KubernetesDouble) -> None:
    # net/http server.go (tlsRecordHeaderLooksLikeHTTP): a plain request on a TLS port.
    response = requests.get(double.url.replace("https://", "http://") + PODS, timeout=10)
    assert response.status_code == 400
    assert response.text == "Client sent an HTTP request to an HTTPS server.\n"
    assert double.requests == []


def test_a_body_over_3_mib_is_413_and_a_post_to_an_object_is_405(double: KubernetesDouble) -> None:
    # k8s.io/apiserver/pkg/server/config.go MaxRequestBodyBytes (3 MiB), and the item
    # path of a resource serves no POST.
    huge = config_map("c", blob="x" * (3 * 1024 * 1024))
    response = call(double, "POST", CONFIG_MAPS, huge)
    assert response.status_code == 413
    assert response.json()["message"] == "Request entity too large: limit is 3145728"
    item = call(double, "POST", CONFIG_MAPS + "/c", config_map("c"))
    assert item.status_code == 405
    assert call(double, "GET", CONFIG_MAPS + "/c").status_code == 404  # nothing created
