"""The kubernetes source: annotated pods and valkra.io/v1 WorkerCapabilities resources.

It talks to the API server through the official client with a private ApiClient per use,
built from the kubeconfig (or the in-cluster service account) each time, so rotated
credentials are picked up and the client's global default configuration is never
touched. Lists are paged (limit/continue) so a large cluster is never one huge response.
Objects are read as plain JSON rather than the client's models: only a few fields
matter, and custom resources are plain JSON anyway.

``watch`` runs list-then-watch per kind, like an informer, but only to say *that*
something changed; the daemon then lists again (level-triggered).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal

import urllib3

from config.errors import DeclarationError, SourceError
from config.events import emit
from config.settings import DEFAULT_LABEL, SourceName, SourceSettingsBase
from discovery import documents
from discovery.kinds import BuildContext, Kind, field_arg
from discovery.sources.base import Declaration, Listing

GROUP, VERSION, PLURAL = "valkra.io", "v1", "workercapabilities"
CRD_MANIFEST = "config/kubernetes/workercapabilities-crd.yaml"
EXTRA_HINT = "the kubernetes source needs the 'kubernetes' extra: pip install 'capsync[kubernetes]'"
POD, RESOURCE = "pod", "workercapabilities"  # the kinds, as named in notify() reasons
CHANGES = ("ADDED", "MODIFIED", "DELETED")

PAGE_LIMIT = 500
REQUEST_TIMEOUT = (5.0, 30.0)  # connect, read (seconds) for one list page
WATCH_SECONDS = 60  # the server ends each watch after this; it is then resumed
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
STOP_POLL = 0.05  # how often watch() re-cuts the streams while its threads wind down

Obj = dict[str, Any]  # an API object as JSON
Objs = list[Obj]  # spelt here: inside KubernetesSource, ``list`` is the method


def _kube() -> Any:
    """The kubernetes package, imported on first use: it is an optional extra."""
    try:
        import kubernetes.client  # noqa: PLC0415
        import kubernetes.config  # noqa: PLC0415
        import kubernetes.watch  # noqa: PLC0415
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
    kubeconfig: str | None = None  # None: in-cluster, else KUBECONFIG or ~/.kube/config
    context: str | None = None

    def __post_init__(self) -> None:
        _kube()  # fail at construction, with the extra to install, not at the first list

    # -- list ---------------------------------------------------------------------------

    def list(self) -> Listing:
        listing = Listing()
        with self._session() as api:
            if self.pods:
                for pod in self._fetch(api, POD)[0]:
                    self._add_pod(pod, listing)
            if self.resources:
                for obj in self._fetch(api, RESOURCE)[0]:
                    meta = obj.get("metadata") or {}
                    listing.declarations.append(Declaration(
                        source=self.name,
                        ref=f"{meta.get('namespace')}/{PLURAL}/{meta.get('name')}",
                        data=obj.get("spec"),
                        default_id=meta.get("name"),
                    ))
        return listing

    def _add_pod(self, pod: Obj, listing: Listing) -> None:
        """Running pods only; a terminating one is leaving, so it no longer declares."""
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        raw = (meta.get("annotations") or {}).get(self.annotation)
        if raw is None or status.get("phase") != "Running" or meta.get("deletionTimestamp"):
            return
        ref = f"{meta.get('namespace')}/{meta.get('name')}"
        try:
            [(_, data)] = documents.parse(raw, ref=ref, fmt="json")
        except DeclarationError as exc:
            listing.invalid.append(exc)
            return
        listing.declarations.append(Declaration(
            source=self.name, ref=ref, data=data, default_id=meta.get("name"),
            address=status.get("podIP") or "",
        ))

    def _fetch(self, api: Any, kind: str) -> tuple[Objs, str]:
        """Every item of one kind, page by page, and the collection's resourceVersion."""
        func, args = self._lister(api, kind)
        items: Objs = []
        token = None
        try:
            while True:
                response = func(
                    *args, label_selector=self.label_selector, limit=PAGE_LIMIT,
                    _continue=token, _preload_content=False, _request_timeout=REQUEST_TIMEOUT,
                )
                try:
                    body = json.loads(response.data)
                finally:
                    response.release_conn()
                items.extend(body.get("items") or [])
                meta = body.get("metadata") or {}
                token = meta.get("continue")
                if not token:
                    return items, str(meta.get("resourceVersion") or "")
        except (_kube().client.ApiException, urllib3.exceptions.HTTPError, OSError,
                ValueError) as exc:
            raise self._failure(kind, exc) from exc

    def _lister(self, api: Any, kind: str) -> tuple[Callable[..., Any], tuple[str, ...]]:
        """The client's list function for a kind (all namespaces or one) and its args."""
        client = _kube().client
        if kind == POD:
            core = client.CoreV1Api(api)
            if self.namespace:
                return core.list_namespaced_pod, (self.namespace,)
            return core.list_pod_for_all_namespaces, ()
        custom = client.CustomObjectsApi(api)
        if self.namespace:
            return custom.list_namespaced_custom_object, (GROUP, VERSION, self.namespace, PLURAL)
        return custom.list_cluster_custom_object, (GROUP, VERSION, PLURAL)

    def _path(self, kind: str) -> str:
        base, plural = ("/api/v1", "pods") if kind == POD else (f"/apis/{GROUP}/{VERSION}", PLURAL)
        scope = f"/namespaces/{self.namespace}" if self.namespace else ""
        return f"{base}{scope}/{plural}"

    def _failure(self, kind: str, exc: BaseException) -> SourceError:
        what = f"source {self.name}: cannot list {kind} (GET {self._path(kind)})"
        if kind == RESOURCE and getattr(exc, "status", None) == 404:
            return SourceError(
                f"{what}: HTTP 404 Not Found: the WorkerCapabilities CRD "
                f"({PLURAL}.{GROUP}, version {VERSION}) is not installed in the cluster; "
                f"apply {CRD_MANIFEST} (or set resources = false)"
            )
        return SourceError(f"{what}: {_cause(exc)}")

    @contextmanager
    def _session(self) -> Iterator[Any]:
        """A private ApiClient for one list or one watch connection, closed afterwards."""
        kube = _kube()
        in_cluster = self.kubeconfig is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        where = "in-cluster service account" if in_cluster else (
            self.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config")
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

    # -- watch --------------------------------------------------------------------------

    def watch(self, notify: Callable[[str], None], stop: threading.Event) -> None:
        """One thread per kind; when ``stop`` is set, cut their streams and wait for them."""
        loops = [
            _KindWatch(self, kind, notify, stop)
            for kind, enabled in ((POD, self.pods), (RESOURCE, self.resources)) if enabled
        ]
        threads = [
            threading.Thread(target=loop.run, name=f"{self.name}-watch-{loop.kind}", daemon=True)
            for loop in loops
        ]
        for thread in threads:
            thread.start()
        stop.wait()
        while any(thread.is_alive() for thread in threads):
            # Repeated: a stream may have been opening while the previous cut was made.
            for loop in loops:
                loop.cut()
            for thread in threads:
                thread.join(STOP_POLL)

    def _annotated(self, obj: Obj) -> bool:
        return self.annotation in ((obj.get("metadata") or {}).get("annotations") or {})


@dataclass
class _Backoff:
    """Reconnect delay: 1 s doubling to 30 s, back to none after a healthy stream."""

    delay: float = 0.0

    def failed(self) -> float:
        self.delay = min(max(self.delay * 2, BACKOFF_FIRST), BACKOFF_MAX)
        return self.delay

    def reset(self) -> None:
        self.delay = 0.0


@dataclass
class _KindWatch:
    """List, then watch from the list's resourceVersion, for ever, for one kind."""

    source: KubernetesSource
    kind: str
    notify: Callable[[str], None]
    stop: threading.Event
    backoff: _Backoff = field(default_factory=_Backoff)
    known: set[str] = field(default_factory=set)  # annotated pods, to see one lose it
    rv: str | None = None  # the last resourceVersion seen; None: list first
    stream: Any = None  # the Watch in use, so that watch() can cut it

    def run(self) -> None:
        """Never raises: every failure is retried, 410 with a relist, others after backoff."""
        relist_reason = ""  # why the next list is a relist; told to notify once it works
        while not self.stop.is_set():
            try:
                with self.source._session() as api:
                    if self.rv is None:
                        self._relist(api)
                        if relist_reason:
                            self.notify(f"kubernetes {self.kind} relisted after {relist_reason}")
                            relist_reason = ""
                    self._follow(api)
                continue
            except Exception as exc:
                if self.stop.is_set():
                    return
                if _gone(exc):
                    # History expired: relist at once, unless that keeps happening.
                    self.rv, relist_reason = None, "the watch expired (410 Gone)"
                    delay = self.backoff.delay
                    self.backoff.failed()
                else:
                    if self.rv is None and not relist_reason:
                        relist_reason = f"an error ({_cause(exc)})"
                    delay = self.backoff.failed()
                    emit(logging.WARNING, "watch_failed", source=self.source.name,
                         kind=self.kind, error=_cause(exc), retry_in=f"{delay:g}s")
            self.stop.wait(delay)

    def cut(self) -> None:
        if self.stream is not None:
            self.stream.stop()

    def _relist(self, api: Any) -> None:
        items, self.rv = self.source._fetch(api, self.kind)
        if self.kind == POD:
            self.known = {_key(pod) for pod in items if self.source._annotated(pod)}

    def _follow(self, api: Any) -> None:
        """Follow one watch request from ``rv`` until it ends, advancing ``rv``."""
        self.stream = _kube().watch.Watch(return_type=object)  # object: events as plain JSON
        if self.stop.is_set():
            return
        func, args = self.source._lister(api, self.kind)
        for event in self.stream.stream(
            func, *args, label_selector=self.source.label_selector, resource_version=self.rv,
            allow_watch_bookmarks=True, timeout_seconds=WATCH_SECONDS,
            _request_timeout=(REQUEST_TIMEOUT[0], WATCH_SECONDS + REQUEST_TIMEOUT[1]),
        ):
            self.backoff.reset()
            obj = event["raw_object"]
            self.rv = str((obj.get("metadata") or {}).get("resourceVersion") or self.rv)
            if event["type"] in CHANGES and self._matters(event["type"], obj):
                self.notify(f"kubernetes {self.kind} {_key(obj)} {event['type']}")
            if self.stop.is_set():
                break
        else:
            self.backoff.reset()

    def _matters(self, type_: str, obj: Obj) -> bool:
        """Every resource change matters; a pod's only if it carries the annotation, before
        or after the change."""
        if self.kind != POD:
            return True
        key, has = _key(obj), self.source._annotated(obj)
        had = key in self.known
        if has and type_ != "DELETED":
            self.known.add(key)
        else:
            self.known.discard(key)
        return has or had


def _key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _gone(exc: BaseException) -> bool:
    return isinstance(exc, _kube().client.ApiException) and exc.status == 410


def _cause(exc: BaseException) -> str:
    """Status code, reason and the API's message; or why the server could not be reached."""
    if isinstance(exc, _kube().client.ApiException):
        if not exc.status:
            return f"request failed: {exc.reason}"
        detail = ""
        with suppress(ValueError, AttributeError):
            detail = json.loads(exc.body or "").get("message") or ""
        return f"HTTP {exc.status} {exc.reason}" + (f": {detail}" if detail else "")
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        return f"cannot reach the API server: {exc.reason}"
    if isinstance(exc, SourceError) and exc.__cause__ is not None:
        return _cause(exc.__cause__)
    return f"{type(exc).__name__}: {exc}"


class KubernetesSourceSettings(SourceSettingsBase):
    """Pods with the annotation and WorkerCapabilities resources; KUBECONFIG conventions."""

    type: Literal["kubernetes"]
    name: SourceName = "kubernetes"
    namespace: str | None = None
    label_selector: str | None = None
    annotation: str = DEFAULT_LABEL
    pods: bool = True
    resources: bool = True
    kubeconfig: str | None = None
    context: str | None = None


def build(settings: KubernetesSourceSettings, ctx: BuildContext) -> KubernetesSource:
    _kube()  # a missing extra fails at start-up, naming the extra to install
    return KubernetesSource(
        name=settings.name, namespace=settings.namespace,
        label_selector=settings.label_selector, annotation=settings.annotation,
        pods=settings.pods, resources=settings.resources, kubeconfig=settings.kubeconfig,
        context=settings.context,
    )


KIND = Kind("kubernetes", KubernetesSourceSettings, "[NAMESPACE]",
            field_arg("namespace", required=False), build)
