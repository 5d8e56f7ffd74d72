"""The kubernetes source, driven through the real client against the API double.

Also checks the shipped CRD manifest against the seed's spec with a small walker of the
OpenAPI subset it uses (jsonschema is not a dependency, and the walker refuses keywords
it does not know, so a constraint cannot be skipped silently).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from config import loading
from config.errors import DeclarationError, SourceError
from daemon.settings_model import SETTINGS
from daemon.wiring import build_sources
from discovery import normalise, schema
from discovery.sources import kubernetes as k8s
from discovery.sources.kubernetes import KubernetesSource
from tests.conftest import ROOT, SEED_CRD_SPEC
from tests.doubles.kubernetes import KubernetesDouble
from tests.kubernetes_helpers import (  # noqa: F401 - fixtures
    Watching,
    annotated,
    double,
    eventually,
    make_source,
    out_of_sync,
    watches,
)

CRD = ROOT / "config" / "kubernetes" / "workercapabilities-crd.yaml"
ANNOTATION = "worker.capabilities"


# -- list -------------------------------------------------------------------------------


def test_lists_running_annotated_pods_and_resources_as_valid_declarations(
    double: KubernetesDouble, make_source: Callable[..., KubernetesSource]
) -> None:
    double.put_pod("build", "rust-7f9c", annotations=annotated(), pod_ip="10.1.2.3")
    double.put_pod("build", "no-id", annotations=annotated('{"flags": {"gpu": true}}'))
    double.put_pod("build", "pending", annotations=annotated(), phase="Pending", pod_ip=None)
    double.put_pod("build", "leaving", annotations=annotated(), terminating=True)
    double.put_pod("build", "plain")
    double.put_resource("build", "rust-worker-1", SEED_CRD_SPEC)
    double.put_resource("other", "from-name", {"fuzzingTools": [{"toolName": "afl++"}]})

    listing = make_source().list()

    assert [(d.ref, d.default_id, d.address) for d in listing.declarations] == [
        ("build/no-id", "no-id", "10.0.0.5"),
        ("build/rust-7f9c", "rust-7f9c", "10.1.2.3"),
        ("build/workercapabilities/rust-worker-1", "rust-worker-1", ""),
        ("other/workercapabilities/from-name", "from-name", ""),
    ]
    assert {d.source for d in listing.declarations} == {"kubernetes"}
    found, invalid = normalise.normalise(listing, "kubernetes")
    assert invalid == []
    caps = {f.caps.id: f.caps for f in found}
    assert sorted(caps) == ["from-name", "no-id", "rust-worker", "rust-worker-1"]
    seed = caps["rust-worker-1"]
    assert seed.all_tools() == ["cargo-audit", "cargo-fmt", "clippy", "rustfmt"]
    assert seed.has_flag("llm_support") and seed.metadata["platform"] == "linux"


def test_namespace_and_label_selector_filter_pods_and_resources(
    double: KubernetesDouble, make_source: Callable[..., KubernetesSource]
) -> None:
    for ns in ("team-a", "team-b"):
        double.put_pod(ns, "cpu", annotations=annotated(), labels={"role": "worker"})
        double.put_pod(ns, "gpu", annotations=annotated(), labels={"role": "worker", "tier": "gpu"})
        double.put_pod(ns, "other", annotations=annotated(), labels={"role": "db"})
        double.put_resource(ns, "res-cpu", {}, labels={"role": "worker"})
        double.put_resource(ns, "res-db", {}, labels={"role": "db"})

    source = make_source(namespace="team-a", label_selector="role=worker,tier!=gpu")
    refs = [d.ref for d in source.list().declarations]

    assert refs == ["team-a/cpu", "team-a/workercapabilities/res-cpu"]
    paths = [path.split("?")[0] for _, path in double.requests]
    assert paths == [
        "/api/v1/namespaces/team-a/pods",
        "/apis/valkra.io/v1/namespaces/team-a/workercapabilities",
    ]
    assert [
        d.ref for d in make_source(resources=False, label_selector="tier").list().declarations
    ] == ["team-a/gpu", "team-b/gpu"]


def test_pages_through_more_than_500_pods(
    double: KubernetesDouble, make_source: Callable[..., KubernetesSource]
) -> None:
    for i in range(501):
        double.put_pod("big", f"w{i:04d}", annotations=annotated())

    listing = make_source(resources=False).list()

    assert len(listing.declarations) == 501
    assert len({d.ref for d in listing.declarations}) == 501
    queries = [path for _, path in double.requests]
    assert len(queries) == 2 and all("limit=500" in q for q in queries)
    assert "continue=" in queries[1]


def test_a_malformed_annotation_is_an_invalid_item_and_the_rest_still_lists(
    double: KubernetesDouble, make_source: Callable[..., KubernetesSource]
) -> None:
    double.put_pod("ns", "good", annotations=annotated())
    double.put_pod("ns", "broken", annotations=annotated('{"id": "x",'))
    double.put_pod("ns", "huge", annotations=annotated(json.dumps({"id": "y" * 70_000})))

    listing = make_source(resources=False).list()

    assert [d.ref for d in listing.declarations] == ["ns/good"]
    assert {e.ref: str(e) for e in listing.invalid}.keys() == {"ns/broken", "ns/huge"}
    assert "malformed JSON" in str(listing.invalid[0])
    assert "64 KiB" in str(listing.invalid[1])


@pytest.mark.parametrize(
    ("break_it", "expected"),
    [
        (lambda d: d.fail_requests(500), r"HTTP 500 Internal Server Error: injected fault"),
        (lambda d: d.fail_requests(503, count=1), r"HTTP 503 Service Unavailable"),
        (lambda d: setattr(d, "token", "rotated"), r"HTTP 401 Unauthorized"),
        (lambda d: d.stop(), r"cannot reach the API server: .*(refused|Connection)"),
    ],
    ids=["500", "503", "401-bad-token", "server-down"],
)
def test_api_failures_raise_source_error_naming_source_path_and_cause(
    double: KubernetesDouble,
    make_source: Callable[..., KubernetesSource],
    break_it: Callable[[KubernetesDouble], None],
    expected: str,
) -> None:
    source = make_source(name="k8s-prod")
    break_it(double)
    with pytest.raises(SourceError, match=expected) as caught:
        source.list()
    assert str(caught.value).startswith("source k8s-prod: cannot list pod (GET /api/v1/pods)")
    assert caught.value.__cause__ is not None


def test_missing_crd_is_a_source_error_naming_the_manifest(tmp_path: Path) -> None:
    with KubernetesDouble(crd_installed=False) as double:
        double.put_pod("ns", "w", annotations=annotated())
        kubeconfig = str(double.write_kubeconfig(tmp_path / "kubeconfig"))
        with pytest.raises(SourceError, match="CRD") as caught:
            KubernetesSource(kubeconfig=kubeconfig).list()
        assert "/apis/valkra.io/v1/workercapabilities" in str(caught.value)
        assert "config/kubernetes/workercapabilities-crd.yaml" in str(caught.value)
        # Pods alone still work without the CRD.
        listing = KubernetesSource(kubeconfig=kubeconfig, resources=False).list()
        assert [d.ref for d in listing.declarations] == ["ns/w"]


def _from_environment(environ: dict[str, str]) -> KubernetesSource:
    """The source as the daemon builds it: the settings hand it KUBECONFIG and whether it
    runs in a pod (config/loading.py is the one reader of the environment)."""
    settings = loading.load(
        SETTINGS,
        environ={"CAPSYNC_CONFIG": os.devnull, **environ},
        overrides=loading.Overrides(sources=[{"type": "kubernetes"}]),
    )
    (source,) = build_sources(settings)
    assert isinstance(source, KubernetesSource)
    return source


def test_configuration_comes_from_kubeconfig_env_and_bad_config_is_a_source_error(
    double: KubernetesDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    double.put_pod("ns", "w", annotations=annotated())
    env_config = str(double.write_kubeconfig(tmp_path / "env-config"))
    source = _from_environment({"KUBECONFIG": env_config})
    assert [d.ref for d in source.list().declarations] == ["ns/w"]

    with pytest.raises(SourceError, match=r"cannot load the Kubernetes configuration .*nope"):
        KubernetesSource(kubeconfig=str(tmp_path / "nope")).list()
    with pytest.raises(SourceError, match="cannot load the Kubernetes configuration"):
        KubernetesSource(kubeconfig=env_config, context="missing").list()
    # Inside a pod, in-cluster config wins over KUBECONFIG (here without a token to read).
    monkeypatch.setattr(
        "kubernetes.config.incluster_config.SERVICE_TOKEN_FILENAME", str(tmp_path / "no-token")
    )
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(double.port))
    in_pod = {"KUBECONFIG": env_config, "KUBERNETES_SERVICE_HOST": "127.0.0.1"}
    with pytest.raises(SourceError, match=r"configuration \(in-cluster service account\)"):
        _from_environment(in_pod).list()


def test_without_the_extra_construction_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kubernetes", None)
    with pytest.raises(ImportError, match=re.escape("pip install 'capsync[kubernetes]'")):
        KubernetesSource()


# -- watch ------------------------------------------------------------------------------


@pytest.fixture
def watching(
    make_source: Callable[..., KubernetesSource], double: KubernetesDouble
) -> Iterator[Watching]:
    running = Watching(make_source())
    eventually(lambda: watches(double) >= 2)  # both kinds are streaming
    yield running
    assert running.finish() < 2.0


def test_watch_notifies_changes_to_annotated_pods_and_to_resources(
    double: KubernetesDouble, watching: Watching
) -> None:
    double.put_pod("ns", "w1", annotations=annotated())
    watching.expect("kubernetes pod ns/w1 ADDED")
    double.put_pod("ns", "w1", annotations=annotated('{"id": "renamed"}'))
    watching.expect("kubernetes pod ns/w1 MODIFIED")
    double.put_pod("ns", "plain")
    double.put_pod("ns", "w1")  # the annotation removed: it mattered before
    watching.expect("kubernetes pod ns/w1 MODIFIED")
    double.delete_pod("ns", "w1")  # no annotation before or after: silent
    double.put_pod("ns", "w2", annotations=annotated())
    double.delete_pod("ns", "w2")
    watching.expect("kubernetes pod ns/w2 DELETED")  # pod events arrive in order
    assert not [note for note in watching.seen if "ns/plain" in note or "w1 DELETED" in note]
    double.put_resource("ns", "r1", SEED_CRD_SPEC)
    watching.expect("kubernetes workercapabilities ns/r1 ADDED")
    double.delete_resource("ns", "r1")
    watching.expect("kubernetes workercapabilities ns/r1 DELETED")


def test_watch_relists_after_410_and_keeps_watching(
    double: KubernetesDouble, watching: Watching
) -> None:
    double.put_pod("ns", "before", annotations=annotated())
    watching.expect("ns/before ADDED")
    lists_before = len(double.requests) - watches(double)

    double.compact()  # open streams get an ERROR event with code 410

    watching.expect("kubernetes pod relisted after the watch expired (410 Gone)")
    watching.expect("kubernetes workercapabilities relisted after the watch expired")
    assert len(double.requests) - watches(double) >= lists_before + 2
    double.put_pod("ns", "after", annotations=annotated())
    watching.expect("kubernetes pod ns/after ADDED")


@pytest.mark.parametrize("compacted_while_away", [False, True], ids=["resume", "expired"])
def test_watch_relists_with_backoff_when_the_api_server_comes_back(
    tmp_path: Path, compacted_while_away: bool
) -> None:
    with KubernetesDouble(gone_as_http_error=True) as double:
        kubeconfig = str(double.write_kubeconfig(tmp_path / "kubeconfig"))
        source = KubernetesSource(kubeconfig=kubeconfig)
        running = Watching(source)
        eventually(lambda: watches(double) >= 2)
        double.stop()
        double.put_pod("ns", "while-away", annotations=annotated())
        if compacted_while_away:
            double.compact()
        # While the watch is broken the cache may be missing events: the source fails
        # (its entries are frozen) rather than answer from it.
        eventually(lambda: out_of_sync(source))
        double.start()  # same port
        running.expect("kubernetes pod relisted after an error")
        running.expect("kubernetes workercapabilities relisted after an error")
        assert "ns/while-away" in [d.ref for d in source.list().declarations]
        double.put_pod("ns", "back", annotations=annotated())
        running.expect("kubernetes pod ns/back ADDED")
        assert running.finish() < 2.0


def test_watch_backs_off_on_errors_and_stops_promptly_while_waiting(
    double: KubernetesDouble, make_source: Callable[..., KubernetesSource]
) -> None:
    double.fail_requests(500)
    running = Watching(make_source())
    time.sleep(1.5)  # each kind: list fails at 0 s, again at 1 s, next try due at 3 s
    assert running.finish() < 2.0
    assert 2 <= len(double.requests) <= 4  # no busy loop
    assert running.seen == []


# -- the manifests ----------------------------------------------------------------------

KNOWN_KEYWORDS = {
    "type",
    "description",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "pattern",
    "minLength",
    "maxLength",
    "maxItems",
    "maxProperties",
    "default",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "minimum",
    "maximum",
    "nullable",
}


def violations(node: dict[str, Any], value: Any, at: str = "spec") -> list[str]:
    """The OpenAPI v3 subset the CRD uses, as the API server applies it."""
    assert set(node) <= KNOWN_KEYWORDS, f"{at}: walker does not know {set(node) - KNOWN_KEYWORDS}"
    kind = node["type"]  # structural schemas type every node
    if value is None and node.get("nullable"):
        return []
    python = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int}[kind]
    if not isinstance(value, python) or (kind == "integer" and isinstance(value, bool)):
        return [f"{at}: not {kind}"]
    out = []
    if kind == "integer" and not node.get("minimum", value) <= value <= node.get("maximum", value):
        out.append(f"{at}: out of range")
    if kind == "object":
        props, extra = node.get("properties", {}), node.get("additionalProperties")
        out += [f"{at}.{key}: required" for key in node.get("required", []) if key not in value]
        if len(value) > node.get("maxProperties", len(value)):
            out.append(f"{at}: too many properties")
        for key, item in value.items():
            sub = props.get(key, extra)
            out += violations(sub, item, f"{at}.{key}") if sub else [f"{at}.{key}: unknown"]
    elif kind == "array":
        if len(value) > node.get("maxItems", len(value)):
            out.append(f"{at}: too many items")
        for i, item in enumerate(value):
            out += violations(node["items"], item, f"{at}[{i}]")
        if node.get("x-kubernetes-list-type") == "map":
            keys = [tuple(i.get(k) for k in node["x-kubernetes-list-map-keys"]) for i in value]
            out += [f"{at}: duplicate map key"] if len(set(keys)) < len(keys) else []
    elif kind == "string":
        if not node.get("minLength", 0) <= len(value) <= node.get("maxLength", len(value)):
            out.append(f"{at}: length")
        if "pattern" in node and not re2_search(node["pattern"], value):
            out.append(f"{at}: pattern")
    return out


def re2_search(pattern: str, text: str) -> bool:
    """Go's regexp (RE2), which the API server runs CRD patterns with, emulated with re.

    Only the syntax the CRD uses is translated: RE2's ``\\x{HHHH}`` is Python's
    ``\\uHHHH``, and ``$`` is the end of the text (Python's also matches before a final
    newline). Escapes whose meaning differs (RE2's ``\\s`` ``\\d`` ``\\w`` ``\\b`` are
    ASCII-only, Python's Unicode) are refused, so the emulation cannot drift silently.
    """
    assert not re.search(r"\\[sSdDwWbBpP]", pattern), f"RE2 and Python differ on {pattern}"
    python = re.sub(r"\\x\{([0-9A-Fa-f]{4})\}", r"\\u\1", pattern)
    python = python[:-1] + r"\Z" if python.endswith("$") else python
    return re.search(python, text) is not None


def crd_spec_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    crd = yaml.safe_load(CRD.read_text())
    [version] = crd["spec"]["versions"]
    return crd, version["schema"]["openAPIV3Schema"]["properties"]["spec"]


def test_crd_manifest_names_and_shape() -> None:
    crd, spec = crd_spec_schema()
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "workercapabilities.valkra.io"
    assert crd["spec"]["group"] == k8s.GROUP and crd["spec"]["scope"] == "Namespaced"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["listKind"]) == (
        "WorkerCapabilities",
        k8s.PLURAL,
        "WorkerCapabilitiesList",
    )
    [version] = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == (k8s.VERSION, True, True)
    assert {c["jsonPath"] for c in version["additionalPrinterColumns"]} >= {
        ".spec.id",
        ".metadata.creationTimestamp",
    }
    # Field for field the declaration schema, in camelCase.
    assert set(spec["properties"]) == {to_camel(f) for f in schema.DeclarationIn.model_fields}
    assert str(CRD.relative_to(ROOT)) == k8s.CRD_MANIFEST


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"id": "-starts-with-dash"}, "spec.id: pattern"),
        ({"staticAnalysisTools": [{"toolName": "clip\tpy"}]}, "toolName: pattern"),
        ({"fuzzingTools": [{"toolName": ""}]}, "toolName: pattern"),
        ({"testFrameworkTools": [{"toolName": "t" * 257}]}, "toolName: pattern"),
        (
            {"staticAnalysisTools": [{"toolName": "a", "alternatives": list("bcdefghijkl")}]},
            "alternatives: too many items",
        ),
        ({"staticAnalysisTools": [{"toolName": "a"}, {"toolName": "a"}]}, "duplicate map key"),
        ({"staticAnalysisTools": [{"required": True}]}, "toolName: required"),
        ({"flags": {"gpu": "yes"}}, "flags.gpu: not boolean"),
        ({"static_analysis_tool": []}, "static_analysis_tool: unknown"),
        (
            {"fuzzingTools": [{"toolName": "a", "permissions": {"cpuLimitPercent": 101}}]},
            "cpuLimitPercent: out of range",
        ),
        (
            {"fuzzingTools": [{"toolName": "a", "expiration": {"expiresAt": "soon"}}]},
            "expiresAt: not integer",
        ),
        (
            {"fuzzingTools": [{"toolName": "a", "attestation": {"signature": "s"}}]},
            "capabilityHash: required",
        ),
    ],
)
def test_crd_schema_accepts_the_seed_spec_and_rejects_bad_ones(
    change: dict[str, Any], problem: str
) -> None:
    _, spec = crd_spec_schema()
    assert violations(spec, SEED_CRD_SPEC) == []
    assert schema.validate(SEED_CRD_SPEC, ref="seed").id == "rust-worker-1"
    found = violations(spec, {**SEED_CRD_SPEC, **change})
    assert any(problem in v for v in found), found


def test_crd_schema_takes_names_and_metadata_as_written() -> None:
    _, spec = crd_spec_schema()
    written = {
        **SEED_CRD_SPEC,
        "staticAnalysisTools": [
            {"toolName": " Clippy ", "alternatives": ["a,b", "clip\u00a0py", " Clippy "]},
            {"toolName": "clippy"},
        ],
        "flags": {"gpu.cuda": True},
        "metadata": {"app.version": "x" * 600, **{f"k{i}": "v" for i in range(70)}},
    }
    assert violations(spec, written) == []
    assert schema.validate(written, ref="crd").metadata["app.version"] == "x" * 600


def test_crd_schema_and_capsync_accept_the_library_terms_in_camel_case() -> None:
    _, spec = crd_spec_schema()
    tool = {
        "toolName": "clippy",
        "required": True,
        "permissions": {
            "filesystemAccess": True,
            "memoryLimitMb": 512,
            "cpuLimitPercent": 100,
            "timeoutSeconds": 60,
        },
        "expiration": {
            "expiresAt": 1767225600,
            "revoked": True,
            "revocationReason": "retired",
            "revokedAt": 1767000000,
            "revokedBy": None,
        },
        "attestation": {
            "capabilityHash": "0" * 64,
            "signature": "s",
            "publicKey": "k",
            "timestamp": 1767000000,
            "algorithm": "SHA256-RSA",
            "attester": "ci",
        },
        "verified": True,
    }
    full = {**SEED_CRD_SPEC, "staticAnalysisTools": [tool]}
    assert violations(spec, full) == []
    [parsed] = schema.validate(full, ref="crd").tools["static_analysis"]
    assert parsed.permissions.memory_limit_mb == 512 and parsed.expiration.revoked
    assert parsed.attestation is not None and parsed.verified


def capsync_accepts(name: str) -> bool:
    try:
        schema.validate({"id": "w", "static_analysis_tools": [{"tool_name": name}]}, ref="t")
    except DeclarationError:
        return False
    return True


def crd_tool_name_pattern() -> str:
    _, spec = crd_spec_schema()
    tool = spec["properties"]["staticAnalysisTools"]["items"]["properties"]
    assert tool["alternatives"]["items"]["pattern"] == tool["toolName"]["pattern"]
    return str(tool["toolName"]["pattern"])


@pytest.mark.parametrize(
    "name",
    [
        "clippy",
        "Clippy",
        "cargo-audit",
        "afl++",
        "工具",
        "🔧",
        "\u00e9t\u00e9",
        "clip\u200bpy",
        " clippy\t",
        "\u3000clippy\u00a0",
        "\x1cclippy",
        "x" * 256,
        " " + "x" * 254 + " ",
        " " + "x" * 128 + "\n",
        "clip py",
        "clip\u00a0py",
        "clip\u2003py",
        "clip\u3000py",
        "clip\u2028py",
        "clip\x85py",
        "clip\x0bpy",
        "clip\x1fpy",
        "clip\x7fpy",
        "clip\x00py",
        "a,b",
        "a|b",
        "a!",
        "a:b",
        "a=b",
        "",
        "   ",
        "\u00a0",
        "x" * 257,
        "é" * 256,
    ],
)
def test_the_crd_pattern_and_capsync_accept_the_same_tool_names(name: str) -> None:
    assert re2_search(crd_tool_name_pattern(), name) == capsync_accepts(name)


def test_the_crd_pattern_and_capsync_agree_on_every_character_in_every_position() -> None:
    pattern = crd_tool_name_pattern()
    # Every character up to U+30FF (all of Python's and Go's whitespace lies below it) and
    # a few beyond; lone surrogates cannot occur in the API's UTF-8 strings.
    chars = [
        chr(c)
        for c in [*range(0x3100), 0xFEFF, 0xFFFD, 0x1F527, 0x10FFFF]
        if not 0xD800 <= c <= 0xDFFF
    ]
    disagree = [
        name
        for char in chars
        for name in (f"a{char}b", f"{char}ab", f"ab{char}")
        if re2_search(pattern, name) != rule_accepts(name)
    ]
    assert disagree == []


def rule_accepts(name: str) -> bool:
    """schema.py's tool-name rule alone: the whole validation, 37,000 times, is slow."""
    try:
        schema._tool_name(name)
    except PydanticCustomError:
        return False
    return True
