"""A Kubernetes API double: pods, valkra.io/v1 WorkerCapabilities and what kubectl applies.

No cluster can run on the test machines, so the kubernetes source, and kubectl, are
driven against this stdlib HTTPS server on loopback. It speaks the API server's JSON
(lists with resourceVersion and continue, chunked watch streams, creates and merge
patches, discovery, metav1 Status errors) over TLS with a CA of its own, checks bearer
tokens against RBAC, and can be made to fail, forget its history (410) or go away.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from .objects import store_new
from .rbac import ADMIN, Attributes, User, allowed
from .resources import ACCESS_REVIEWS, NAMESPACES, PODS, RESOURCES, TYPES, ResourceType
from .server import DoubleServer, status_object
from .store import Store, now
from .tls import ClusterCA

__all__ = ["MANIFESTS", "Fault", "KubernetesDouble"]

MANIFESTS = Path(__file__).resolve().parents[3] / "config" / "kubernetes"


@dataclass(frozen=True)
class Fault:
    status: int
    body: str | None  # None: a metav1 Status saying "injected fault"
    content_type: str


class KubernetesDouble:
    """The double's Python API. State survives ``stop()``/``start()`` like etcd would."""

    def __init__(
        self,
        port: int = 0,
        *,
        crd_installed: bool = True,
        gone_as_http_error: bool = False,
        rbac: str | None = "rbac-cluster.yaml",
    ) -> None:
        self.port = port
        self.crd_installed = crd_installed
        self.crd_starting = False  # installed but not yet served: 503
        self.account = User.service_account("capsync", "capsync")
        self.ca = ClusterCA()
        files = tempfile.mkdtemp(prefix="k8s-double-")
        weakref.finalize(self, shutil.rmtree, files, True)
        self.ca_file = self.write_ca(Path(files) / "ca.crt")  # for ``verify=``
        # A proxy that closes every watch at once: 200, then the end of the stream.
        self.cut_watches = False
        # Expired watches: an ERROR event in a 200 stream (the default), or HTTP 410.
        self.gone_as_http_error = gone_as_http_error
        self.token = secrets.token_hex(16)  # capsync's service account
        self.admin_token = secrets.token_hex(16)  # a cluster administrator (system:masters)
        self.store = Store()
        if rbac is not None:  # what capsync's service account may do: a shipped manifest
            self.apply(MANIFESTS / rbac)
        self.requests: list[tuple[str, str]] = []  # (method, path with its query string)
        self._lock = threading.Lock()
        self._fault: list[Any] | None = None  # [Fault, remaining count or None]
        self._server: DoubleServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> KubernetesDouble:
        server = DoubleServer(("127.0.0.1", self.port), self, self.ca.server_context())
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"k8s-double-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut every open connection; ``start()`` again on the same port."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close_connections()
        with self.store.cond:
            self.store.cond.notify_all()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> KubernetesDouble:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def write_ca(self, path: Path) -> Path:
        """The cluster CA certificate (PEM), for a client's ``verify``."""
        path.write_bytes(self.ca.pem)
        return path

    def write_kubeconfig(self, path: Path, *, admin: bool = False) -> Path:
        """A kubeconfig for this double: its https URL and CA, and the bearer token of
        capsync's service account (or, with ``admin``, a cluster administrator's)."""
        user = "admin" if admin else "capsync"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "double",
                    "cluster": {"server": self.url, "certificate-authority-data": self.ca.data},
                }
            ],
            "users": [{"name": user, "user": {"token": self.admin_token if admin else self.token}}],
            "contexts": [{"name": "double", "context": {"cluster": "double", "user": user}}],
            "current-context": "double",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def write_service_account(self, directory: Path) -> dict[str, str]:
        """What the kubelet gives a pod running as capsync's service account: ``token``,
        ``ca.crt`` and ``namespace`` in ``directory``; returns the environment
        (KUBERNETES_SERVICE_HOST and _PORT) that points the pod at the API server."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "token").write_text(self.token)
        (directory / "ca.crt").write_bytes(self.ca.pem)
        (directory / "namespace").write_text("capsync")
        return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.port)}

    # -- state --------------------------------------------------------------------------

    def put_pod(
        self,
        namespace: str,
        name: str,
        *,
        annotations: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        phase: str = "Running",
        pod_ip: str | None = "10.0.0.5",
        terminating: bool = False,
        ready: bool = True,
    ) -> dict[str, Any]:
        """Create or replace a pod; ``terminating`` marks it as being deleted (graceful)."""
        condition = {"type": "Ready", "status": str(ready)}
        if not ready:  # as the kubelet words it
            condition.update(
                reason="ContainersNotReady", message="containers with unready status: [worker]"
            )
        status: dict[str, Any] = {"phase": phase, "conditions": [condition]}
        if pod_ip:
            status.update(podIP=pod_ip, podIPs=[{"ip": pod_ip}])
        body = {
            "spec": {
                "containers": [{"name": "worker", "image": "example.invalid/worker:1"}],
                "nodeName": "node-1",
            },
            "status": status,
        }
        if terminating:
            body["metadata"] = {"deletionTimestamp": now(), "deletionGracePeriodSeconds": 30}
        self.ensure_namespace(namespace)
        return self.store.put(PODS, namespace, name, body, labels=labels, annotations=annotations)

    def delete_pod(self, namespace: str, name: str) -> bool:
        return self.store.delete(PODS, namespace, name)

    def put_resource(
        self, namespace: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None
    ) -> dict[str, Any]:
        self.ensure_namespace(namespace)
        return self.store.put(RESOURCES, namespace, name, {"spec": spec}, labels=labels)

    def apply(self, path: Path) -> None:
        """Create the objects of a manifest file, as ``kubectl apply`` by an administrator
        does on an empty cluster (each must be of a type the double serves)."""
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            [kind] = [
                t
                for t in TYPES.values()
                if (t.group_version, t.kind) == (doc["apiVersion"], doc["kind"])
            ]
            namespace = doc["metadata"].get("namespace", "default") if kind.namespaced else ""
            store_new(self, kind, namespace, doc)

    def ensure_namespace(self, name: str) -> None:
        """Objects live in namespaces that exist (kubectl asks after a NotFound)."""
        if self.store.get(NAMESPACES, "", name) is None:
            self.store.put(NAMESPACES, "", name, {"spec": {"finalizers": ["kubernetes"]}})

    def delete_resource(self, namespace: str, name: str) -> bool:
        return self.store.delete(RESOURCES, namespace, name)

    def compact(self) -> None:
        """Forget the event history: open watches end with 410, older versions are Expired."""
        self.store.compact()

    # -- permissions, faults and the request log ----------------------------------------

    def authenticate(self, authorization: str) -> User | None:
        """The user a request's bearer token names; None is a 401. As the API server's
        bearer-token authenticator reads the header (k8s.io/apiserver/pkg/authentication/
        request/bearertoken): the scheme in any case (the in-cluster loader of the Python
        client sends "bearer"), then the token."""
        parts = authorization.strip().split(" ", 2)
        if len(parts) < 2 or parts[0].lower() != "bearer":
            return None
        return {self.token: self.account, self.admin_token: ADMIN}.get(parts[1])

    def may(self, user: User, attrs: Attributes) -> bool:
        """Whether the RBAC objects in the store let ``user`` do this."""
        return allowed(self.store, user, attrs)

    def authorize(
        self,
        user: User,
        verb: str,
        kind: ResourceType,
        namespace: str | None,
        name: str | None,
    ) -> dict[str, Any] | None:
        """The 403 Status the API server answers when RBAC denies the request, else None."""
        resource, group = kind.plural, kind.group
        attrs = Attributes(verb, group, resource, namespace or "", name or "")
        if kind.plural == ACCESS_REVIEWS or self.may(user, attrs):
            return None
        qualified = kind.qualified
        scope = "at the cluster scope" if namespace is None else f'in the namespace "{namespace}"'
        named = f' "{name}"' if name else ""
        status = status_object(
            403,
            f'{qualified}{named} is forbidden: User "{user.name}" cannot '
            f'{verb} resource "{resource}" in API group "{group}" '
            f"{scope}",
        )
        details = {"group": group, "kind": resource} if group else {"kind": resource}
        if name:
            details["name"] = name
        status["details"] = details
        return status

    def fail_requests(
        self,
        status: int = 500,
        count: int | None = None,
        *,
        body: str | None = None,
        content_type: str = "text/html",
    ) -> None:
        """Answer the next ``count`` requests (all, when None) with ``status``: a Status
        object, or ``body`` as given (a proxy's HTML page, a truncated or odd JSON)."""
        with self._lock:
            self._fault = [Fault(status, body, content_type), count]

    def clear_faults(self) -> None:
        with self._lock:
            self._fault = None

    def take_fault(self) -> Fault | None:
        """The answer to fail this request with, if a fault is armed (consumes one)."""
        with self._lock:
            if self._fault is None:
                return None
            fault, remaining = self._fault
            if remaining is not None:
                if remaining <= 0:
                    self._fault = None
                    return None
                self._fault[1] = remaining - 1
            return fault

    def log_request(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))
