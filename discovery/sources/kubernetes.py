"""The kubernetes source: annotated pods and valkra.io/v1 WorkerCapabilities resources.

It talks to the API server through the official client with a private ApiClient per use,
built from the kubeconfig (or the in-cluster service account) each time, so rotated
credentials are picked up and the client's global default configuration is never
touched. Lists are paged (limit/continue) so a large cluster is never one huge response.
Objects are read as plain JSON rather than the client's models: only a few fields
matter, and custom resources are plain JSON anyway.

While ``watch`` runs, one informer-style cache per collection (kube_reflector) answers
``list`` without a request; without it (``run --once``, ``validate``) ``list`` pages
through the API. Only a clean answer is data: a page that is not the documented list
shape (an HTML error page, a truncated body, a Status) fails the listing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import urllib3
from pydantic import Field

from config.errors import DeclarationError, SourceError
from config.events import emit
from config.settings import DEFAULT_LABEL, SourceName, SourceSettingsBase
from discovery import documents
from discovery.health import PASSING, Health
from discovery.kinds import BuildContext, Kind, field_arg
from discovery.sources.base import Declaration, Listing
from discovery.sources.kube_reflector import Gone, Obj, Reflector, View

GROUP, VERSION, PLURAL = "valkra.io", "v1", "workercapabilities"
CRD_MANIFEST = "config/kubernetes/workercapabilities-crd.yaml"
RBAC_CLUSTER = "config/kubernetes/rbac-cluster.yaml"
RBAC_NAMESPACE = "config/kubernetes/rbac-namespace.yaml"
EXTRA_HINT = "the kubernetes source needs the 'kubernetes' extra: pip install 'capsync[kubernetes]'"
POD, RESOURCE = "pod", "workercapabilities"  # the collections, as named in notify() reasons
RESOURCE_NAMES = {POD: "pods", RESOURCE: f"{PLURAL}.{GROUP}"}  # as RBAC rules name them

PAGE_LIMIT = 500
REQUEST_TIMEOUT = (5.0, 30.0)  # connect, read (seconds) for one list page
WATCH_SECONDS = 60  # the server ends each watch after this; it is then resumed
HALT_SECONDS = 1.5  # close() gives the watch threads this long, within the 2 s promised
FIRST_LIST_WAIT = 35.0  # list() waits this long for a cache's first list to end

# Spelt here: inside KubernetesSource, ``list`` is the method.
Objs = list[Obj]
Views = list[View]
Collections = list[str]


def _kube() -> Any:
    """The kubernetes package, imported on first use: it is an optional extra."""
    try:
        import kubernetes.client  # noqa: PLC0415
        import kubernetes.config  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(EXTRA_HINT) from exc
    return kubernetes


@dataclass
class KubernetesSource:
    name: str = "kubernetes"
    namespace: str | None = None  # None: all namespaces
    label_selector: str | None = None
    annotation: str = "worker.capabilities"
    pods: bool = True
    resources: bool = True
    kubeconfig: str | None = None  # None: in-cluster in a pod, else kubeconfig_env, ~/.kube/config
    context: str | None = None
    kubeconfig_env: str | None = None  # $KUBECONFIG, handed over by the settings
    in_pod: bool = False  # $KUBERNETES_SERVICE_HOST is set: in-cluster configuration
    _reflectors: list[Reflector] = field(default_factory=list, init=False, repr=False)
    _warned: set[str] = field(default_factory=set, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    # The caches' view lists and the listing made of them: handed back while every cache
    # hands back the same list, so a steady cycle costs no walk over the pods.
    _last: tuple[list[Views], Listing] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        _kube()  # fail at construction, with the extra to install, not at the first list

    # -- the Source interface -----------------------------------------------------------

    def list(self) -> Listing:
        """From the caches while ``watch`` runs (SourceError if one is out of sync), else
        one paged list per collection."""
        with self._lock:
            reflectors = self._reflectors[:]
        if reflectors:
            views = [r.views(FIRST_LIST_WAIT) for r in reflectors]
            last = self._last
            if (
                last is not None
                and len(last[0]) == len(views)
                and all(old is new for old, new in zip(last[0], views, strict=True))
            ):
                return last[1]
            listing = self._listing([view for cached in views for view in cached])
            self._last = (views, listing)
            return listing
        with self.session() as api:
            return self._listing(
                [
                    view
                    for collection in self._collections()
                    for obj in self.fetch(api, collection)[0]
                    if (view := self.view(collection, obj)) is not None
                ]
            )

    def watch(self, notify: Callable[[str], None], stop: threading.Event) -> None:
        """Keep the caches in step until ``stop`` is set; ``notify`` on each change that
        can alter a declaration."""
        reflectors = [Reflector(self, collection, notify) for collection in self._collections()]
        with self._lock:
            self._reflectors = reflectors
        for reflector in reflectors:
            reflector.start()
        stop.wait()
        self.close()

    def close(self) -> None:
        """End the watch threads (their streams are cut, so within about 2 s)."""
        with self._lock:
            reflectors, self._reflectors = self._reflectors, []
        for reflector in reflectors:
            reflector.halted.set()
        deadline = time.monotonic() + HALT_SECONDS
        for reflector in reflectors:
            reflector.halt(deadline)

    def _collections(self) -> Collections:
        return [
            collection for collection, on in ((POD, self.pods), (RESOURCE, self.resources)) if on
        ]

    def _listing(self, views: Views) -> Listing:
        listing = Listing()
        for view in views:
            if isinstance(view.parsed, DeclarationError):
                listing.invalid.append(view.parsed)
                continue
            listing.declarations.append(
                Declaration(
                    source=self.name,
                    ref=view.ref,
                    data=view.parsed,
                    default_id=view.default_id,
                    address=view.address,
                    fingerprint=view.text,
                    health=view.health,
                )
            )
        return listing

    # -- what the reflectors use --------------------------------------------------------

    def view(self, collection: str, obj: Obj) -> View | None:
        """The declaration-relevant part of an object; None when it declares nothing
        (a pod without the annotation, not running, or terminating)."""
        meta = obj.get("metadata") or {}
        namespace, name = meta.get("namespace"), meta.get("name")
        if collection == RESOURCE:
            spec = obj.get("spec")
            return View(
                f"{namespace}/{PLURAL}/{name}",
                name,
                json.dumps(spec, sort_keys=True, ensure_ascii=False),
                "",
                spec,
            )
        status = obj.get("status") or {}
        raw = (meta.get("annotations") or {}).get(self.annotation)
        if (
            not isinstance(raw, str)
            or status.get("phase") != "Running"
            or meta.get("deletionTimestamp")
        ):
            return None
        ref = f"{namespace}/{name}"
        parsed: Any
        try:
            [(_, parsed)] = documents.parse(raw, ref=ref, fmt="json")
        except DeclarationError as exc:
            parsed = exc
        return View(ref, name, raw, status.get("podIP") or "", parsed, _readiness(status))

    def fetch(self, api: Any, collection: str) -> tuple[Objs, str]:
        """Every item of one collection, page by page, and its resourceVersion."""
        func, args = self._lister(api, collection)
        items: Objs = []
        token = None
        try:
            while True:
                response = func(
                    *args,
                    label_selector=self.label_selector,
                    limit=PAGE_LIMIT,
                    _continue=token,
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                )
                try:
                    page, token, rv = _page(json.loads(response.data))
                finally:
                    response.release_conn()
                items.extend(page)
                if not token:
                    return items, rv
        except (
            _kube().client.ApiException,
            urllib3.exceptions.HTTPError,
            OSError,
            ValueError,
        ) as exc:
            raise self._failure(collection, "list", exc) from exc

    def open_watch(self, api: Any, collection: str, resource_version: str) -> Any:
        """The streaming response of one watch request from ``resource_version``."""
        func, args = self._lister(api, collection)
        try:
            return func(
                *args,
                watch=True,
                label_selector=self.label_selector,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_SECONDS,
                _preload_content=False,
                _request_timeout=(REQUEST_TIMEOUT[0], WATCH_SECONDS + REQUEST_TIMEOUT[1]),
            )
        except (_kube().client.ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            if getattr(exc, "status", None) == 410:
                raise Gone(_cause(exc)) from exc
            raise self._failure(collection, "watch", exc) from exc

    def describe(self, collection: str, exc: BaseException) -> str:
        """A failure of this source, without the ``source NAME:`` prefix."""
        if isinstance(exc, SourceError):
            return str(exc).removeprefix(f"source {self.name}: ")
        return f"cannot follow {collection}: {_cause(exc)}"

    @contextmanager
    def session(self) -> Iterator[Any]:
        """A private ApiClient for one list or one watch connection, closed afterwards."""
        kube = _kube()
        in_cluster = self.kubeconfig is None and self.in_pod
        where = (
            "in-cluster service account"
            if in_cluster
            else (self.kubeconfig or self.kubeconfig_env or "~/.kube/config")
        )
        try:
            if in_cluster:
                configuration = kube.client.Configuration()
                kube.config.load_incluster_config(client_configuration=configuration)
                api = kube.client.ApiClient(configuration=configuration)
            else:
                api = kube.config.new_client_from_config(
                    config_file=where, context=self.context, persist_config=False
                )
        # The loaders raise ConfigException, OSError, YAMLError, KeyError...: all mean the
        # configuration cannot be used.
        except Exception as exc:
            raise SourceError(
                f"source {self.name}: cannot load the Kubernetes configuration ({where}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        try:
            yield api
        finally:
            api.close()

    # -- requests and their failures ----------------------------------------------------

    def _lister(self, api: Any, collection: str) -> tuple[Callable[..., Any], tuple[str, ...]]:
        """The client's list function for a collection (all namespaces or one) and its args."""
        client = _kube().client
        if collection == POD:
            core = client.CoreV1Api(api)
            if self.namespace:
                return core.list_namespaced_pod, (self.namespace,)
            return core.list_pod_for_all_namespaces, ()
        custom = client.CustomObjectsApi(api)
        if self.namespace:
            return custom.list_namespaced_custom_object, (GROUP, VERSION, self.namespace, PLURAL)
        return custom.list_cluster_custom_object, (GROUP, VERSION, PLURAL)

    def _path(self, collection: str) -> str:
        base, plural = (
            ("/api/v1", "pods") if collection == POD else (f"/apis/{GROUP}/{VERSION}", PLURAL)
        )
        scope = f"/namespaces/{self.namespace}" if self.namespace else ""
        return f"{base}{scope}/{plural}"

    def _failure(self, collection: str, verb: str, exc: BaseException) -> SourceError:
        what = f"source {self.name}: cannot {verb} {collection} (GET {self._path(collection)})"
        status = getattr(exc, "status", None)
        if collection == RESOURCE and status == 404:
            return SourceError(
                f"{what}: HTTP 404 Not Found: the WorkerCapabilities CRD "
                f"({PLURAL}.{GROUP}, version {VERSION}) is not installed in the cluster; "
                f"apply {CRD_MANIFEST} (or set resources = false)"
            )
        if status == 403:
            return SourceError(f"{what}: {self._forbidden(collection, verb, exc)}")
        return SourceError(f"{what}: {_cause(exc)}")

    def _forbidden(self, collection: str, verb: str, exc: BaseException) -> str:
        """The permission that is missing, and the manifest that grants it; warned once,
        as the configured scope and the credentials' permissions do not match."""
        if self.namespace:
            scope = f'in the namespace "{self.namespace}"'
            grant = f"apply {RBAC_NAMESPACE} with its namespace set to {self.namespace}"
        else:
            scope = "at the cluster scope (namespace unset: all namespaces)"
            grant = (
                f"apply {RBAC_CLUSTER}, or set the source's namespace and apply {RBAC_NAMESPACE}"
            )
        missing = f"{verb} {RESOURCE_NAMES[collection]} {scope}"
        if missing not in self._warned:
            self._warned.add(missing)
            emit(
                logging.WARNING,
                "kubernetes_forbidden",
                source=self.name,
                missing=missing,
                hint=grant,
            )
        return f"{_cause(exc)}; missing permission: {missing}; {grant}"


def _readiness(status: dict[str, Any]) -> Health:
    """A running pod's health: its Ready condition (True: passing; False or Unknown:
    critical, with the kubelet's reason and message; none reported yet: warning)."""
    conditions = status.get("conditions")
    ready = next(
        (
            c
            for c in (conditions if isinstance(conditions, list) else [])
            if isinstance(c, dict) and c.get("type") == "Ready"
        ),
        None,
    )
    if ready is None:
        return Health("warning", "kubernetes: Running, no Ready condition reported yet")
    if ready.get("status") == "True":
        return PASSING
    why = ": ".join(str(ready[k]) for k in ("reason", "message") if ready.get(k))
    return Health("critical", "kubernetes: not Ready" + (f" ({why})" if why else ""))


def _page(body: Any) -> tuple[Objs, str | None, str]:
    """Items, continue token and resourceVersion of a list page of the documented shape."""
    meta = body.get("metadata") if isinstance(body, dict) else None
    items = body.get("items") if isinstance(body, dict) else None
    if (
        not isinstance(meta, dict)
        or not isinstance(items, list)
        or not all(
            isinstance(item, dict) and isinstance(item.get("metadata"), dict) for item in items
        )
    ):
        collection = body.get("kind") if isinstance(body, dict) else type(body).__name__
        raise ValueError(f"the answer is not a list of objects (kind {collection!r})")
    return items, meta.get("continue") or None, str(meta.get("resourceVersion") or "")


def _cause(exc: BaseException) -> str:
    """Status code, reason and the API's message; or why the server could not be reached."""
    if isinstance(exc, _kube().client.ApiException):
        if not exc.status:
            return f"request failed: {exc.reason}"
        body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else exc.body
        detail = ""
        with suppress(ValueError, AttributeError):
            detail = json.loads(body or "").get("message") or ""
        if not detail and body:  # not a Status: a proxy's page, "404 page not found"...
            detail = " ".join(str(body).split())[:120]
        return f"HTTP {exc.status} {exc.reason}" + (f": {detail}" if detail else "")
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        return f"cannot reach the API server: {exc.reason}"
    if isinstance(exc, SourceError) and exc.__cause__ is not None:
        return _cause(exc.__cause__)
    return f"{type(exc).__name__}: {exc}"


class KubernetesSourceSettings(SourceSettingsBase):
    """Pods with the annotation and WorkerCapabilities resources; KUBECONFIG conventions."""

    environment: ClassVar[Mapping[str, str]] = {
        "kubeconfig_env": "KUBECONFIG",
        "service_host": "KUBERNETES_SERVICE_HOST",
    }

    type: Literal["kubernetes"]
    name: SourceName = "kubernetes"
    namespace: str | None = None
    label_selector: str | None = None
    annotation: str = DEFAULT_LABEL
    pods: bool = True
    resources: bool = True
    kubeconfig: str | None = None
    context: str | None = None
    kubeconfig_env: str | None = Field(None, exclude=True)
    service_host: str | None = Field(None, exclude=True)


def build(settings: KubernetesSourceSettings, ctx: BuildContext) -> KubernetesSource:
    _kube()  # a missing extra fails at start-up, naming the extra to install
    return KubernetesSource(
        name=settings.name,
        namespace=settings.namespace,
        label_selector=settings.label_selector,
        annotation=settings.annotation,
        pods=settings.pods,
        resources=settings.resources,
        kubeconfig=settings.kubeconfig,
        context=settings.context,
        kubeconfig_env=settings.kubeconfig_env,
        in_pod=bool(settings.service_host),
    )


KIND = Kind(
    "kubernetes",
    KubernetesSourceSettings,
    "[NAMESPACE]",
    field_arg("namespace", required=False),
    build,
)
