"""Validation rules: each bad declaration names its field and rule; nothing is rewritten."""

from __future__ import annotations

import json
from typing import Any

import pytest

from config.errors import DeclarationError
from discovery import schema, seed_json
from discovery.model import ToolCapability
from tests.conftest import SEED_CRD_SPEC, SEED_LABEL


def problems(data: Any, default_id: str | None = None) -> list[tuple[str, str]]:
    with pytest.raises(DeclarationError) as info:
        schema.validate(data, ref="t", default_id=default_id)
    return info.value.problems


def test_seed_docker_label() -> None:
    caps = schema.validate(json.loads(SEED_LABEL), ref="t")
    assert caps.id == "rust-worker"
    assert caps.tools == {"static_analysis": (ToolCapability("clippy", required=True),)}
    assert caps.flags == {} and caps.metadata == {}


def test_seed_crd_spec_camel_case() -> None:
    caps = schema.validate(SEED_CRD_SPEC, ref="t")
    assert caps.all_tools() == ["cargo-audit", "cargo-fmt", "clippy", "rustfmt"]
    assert caps.tools["static_analysis"][1] == ToolCapability("rustfmt", False, ("cargo-fmt",))
    assert caps.has_flag("llm_support")
    assert caps.metadata == {"version": "1.0.0", "platform": "linux"}


@pytest.mark.parametrize(
    "tool",
    [
        {"tool_name": "  AFL++ ", "alternatives": ["afl++", "HonggFuzz", "honggfuzz", "  AFL++ "]},
        {"tool_name": "a,b", "alternatives": ["c|d", "e!"]},
        {"tool_name": "x!", "alternatives": ["a:b", "a=b", "a\u00a0b", "a b"]},
        {"tool_name": "é" * 256, "alternatives": ["x" * 256]},
    ],
    ids=["case-padding-repeats-self", "separators", "punctuation-and-spaces", "long"],
)
def test_names_are_kept_exactly_as_declared(tool: dict[str, Any]) -> None:
    caps = schema.validate({"id": "w", "fuzzing_tools": [tool]}, ref="t")
    [kept] = caps.tools["fuzzing"]
    assert (kept.tool_name, list(kept.alternatives)) == (tool["tool_name"], tool["alternatives"])
    assert seed_json.to_seed(caps)["fuzzing_tools"][0]["alternatives"] == tool["alternatives"]


def test_what_only_consul_forbids_is_kept() -> None:
    metadata = {"app.version": "1", "consul-x": "y", "v": "é" * 300, "k" * 200: "v"}
    metadata |= {f"k{i}": "v" for i in range(60)}
    flags = {"a.b": True, "Case": False, "case": True}
    caps = schema.validate({"id": "w", "flags": flags, "metadata": metadata}, ref="t")
    assert caps.metadata == metadata and caps.flags == flags


def test_case_only_different_tools_are_two_tools() -> None:
    caps = schema.validate(
        {"id": "w", "fuzzing_tools": [{"tool_name": "afl"}, {"tool_name": "AFL"}]}, ref="t"
    )
    assert [t.tool_name for t in caps.tools["fuzzing"]] == ["afl", "AFL"]
    assert caps.all_tools() == ["AFL", "afl"]


def test_default_id_from_source() -> None:
    assert schema.validate({}, ref="t", default_id="container-7").id == "container-7"
    assert schema.validate({"id": "own"}, ref="t", default_id="container-7").id == "own"
    assert problems({}) == [("id", "required: this source supplies no default id")]
    assert problems({}, default_id="/bad name")[0][0] == "id"


@pytest.mark.parametrize(
    ("data", "loc", "rule"),
    [
        ({"id": "-x"}, "id", "starting with a letter or digit"),
        ({"id": "a" * 129}, "id", "1-128 characters"),
        ({"id": "a b"}, "id", "[A-Za-z0-9._-]"),
        ({"id": 7}, "id", "valid string"),
        (
            {"id": "w", "static_analysis_tool": []},
            "static_analysis_tool",
            "did you mean 'static_analysis_tools'",
        ),
        (
            {"id": "w", "static_analysis_tools": [{"tool_name": "clippy", "requred": True}]},
            "static_analysis_tools[0].requred",
            "unknown field",
        ),
        (
            {"id": "w", "fuzzing_tools": [{"tool_name": "a\tb"}]},
            "fuzzing_tools[0].tool_name",
            "control character",
        ),
        (
            {"id": "w", "fuzzing_tools": [{"tool_name": "a\x01b"}]},
            "fuzzing_tools[0].tool_name",
            "control character",
        ),
        (
            {"id": "w", "fuzzing_tools": [{"tool_name": ""}]},
            "fuzzing_tools[0].tool_name",
            "1-256 characters",
        ),
        (
            {"id": "w", "fuzzing_tools": [{"tool_name": "x" * 257}]},
            "fuzzing_tools[0].tool_name",
            "1-256 characters",
        ),
        (
            {"id": "w", "fuzzing_tools": [{"tool_name": "x", "alternatives": list("abcdefghijk")}]},
            "fuzzing_tools[0].alternatives",
            "at most 10 alternatives",
        ),
        (
            {"id": "w", "fuzzing_tools": [{"tool_name": "X "}, {"tool_name": "X "}]},
            "fuzzing_tools[1].tool_name",
            "duplicate tool 'X '",
        ),
        (
            {"id": "w", "fuzzing_tools": [{"tool_name": "x", "required": "yes"}]},
            "fuzzing_tools[0].required",
            "valid boolean",
        ),
        ({"id": "w", "flags": {"": True}}, "flags. (key)", "non-empty"),
        ({"id": "w", "flags": {"f": "true"}}, "flags.f", "valid boolean"),
        ({"id": "w", "metadata": {"a\nb": "v"}}, "(key)", "control characters"),
        ({"id": "w", "metadata": {"v": 1}}, "metadata.v", "valid string"),
        ({"id": "w", "metadata": {"v": "\ud800"}}, "metadata.v", "lone surrogate U+D800"),
        ({"id": "w", "metadata": {"k\udc80": "v"}}, "(key)", "lone surrogate U+DC80"),
        ({"id": "w", "metadata": {"v": "a\x00b"}}, "metadata.v", "U+0000"),
        ({"id": "w\x00", "metadata": {}}, "id", "U+0000"),
        (
            {"id": "w", "fuzzing_tools": [{"tool_name": "ok", "alternatives": ["x\x00"]}]},
            "fuzzing_tools[0].alternatives[0]",
            "U+0000",
        ),
        (
            {"id": "w", "fuzzing_tools": [{"tool_name": "ok", "alternatives": ["x\ud83d"]}]},
            "fuzzing_tools[0].alternatives[0]",
            "not valid Unicode",
        ),
        (
            {"id": "w", "metadata": {"capsync-owner": "me"}},
            "metadata.capsync-owner (key)",
            "reserved",
        ),
        ({"id": "w", "metadata": {"fuzzing": "yes"}}, "metadata.fuzzing (key)", "reserved"),
        ({"id": "w", "metadata": {"flag-x": "1"}}, "metadata.flag-x (key)", "reserved"),
        (
            {"id": "w", "metadata": {"external-source": "k8s"}},
            "metadata.external-source (key)",
            "reserved",
        ),
        ([{"id": "w"}], "", "must be a JSON object"),
    ],
)
def test_rejections_name_field_and_rule(data: Any, loc: str, rule: str) -> None:
    found = problems(data)
    assert any(loc in p_loc and rule in msg for p_loc, msg in found), found


def test_every_problem_reported_at_once() -> None:
    found = problems({"id": "a b", "flags": {"x": 1}, "metadata": {"capsync-a": "b"}})
    assert {loc for loc, _ in found} == {"id", "flags.x", "metadata.capsync-a (key)"}


def test_snake_and_camel_for_same_field_is_an_error() -> None:
    found = problems({"id": "w", "fuzzing_tools": [], "fuzzingTools": []})
    assert any("unknown field" in msg for _, msg in found)


def test_dump_is_canonical_and_revalidates() -> None:
    caps = schema.validate(SEED_CRD_SPEC, ref="t")
    dumped = seed_json.to_seed(caps)
    assert set(dumped) == {
        "id",
        "static_analysis_tools",
        "security_scanning_tools",
        "dynamic_analysis_tools",
        "fuzzing_tools",
        "test_framework_tools",
        "flags",
        "metadata",
    }
    assert schema.validate(dumped, ref="t") == caps
