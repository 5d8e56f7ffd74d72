"""The seed library's query semantics, table-driven."""

from __future__ import annotations

import pytest

from discovery.model import Capabilities, ToolCapability, find_with_capability

NOW = 1_767_225_600

RUST = Capabilities(
    id="rust-1",
    tools={
        "static_analysis": (
            ToolCapability("clippy", required=True),
            ToolCapability("rustfmt", alternatives=("cargo-fmt",)),
        ),
        "security_scanning": (ToolCapability("cargo-audit", required=True),),
    },
    flags={"llm_support": True, "ast_support": False},
)


def named(*names: str):
    return lambda tool: tool in names


@pytest.mark.parametrize(
    ("category", "names", "expected"),
    [
        ("static_analysis", ["clippy"], True),
        ("static_analysis", ["cargo-fmt"], True),  # by an alternative
        ("static_analysis", ["semgrep"], False),
        ("static_analysis", [], False),
        ("fuzzing", ["clippy"], False),  # empty category
        ("no_such_category", ["clippy"], False),  # unknown category
        ("security_scanning", ["cargo-audit"], True),
    ],
    ids=["name", "alternative", "absent", "empty-checker", "empty-category", "unknown", "other"],
)
def test_has_capability(category: str, names: list[str], expected: bool) -> None:
    assert RUST.has_capability(category, named(*names), now=NOW) is expected


def test_required_flag_plays_no_part_in_has_capability() -> None:
    # rustfmt is optional, yet it alone satisfies the category.
    assert RUST.has_capability("static_analysis", named("rustfmt"), now=NOW)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["clippy", "cargo-audit"], True),
        (["clippy"], False),
        (["clippy", "cargo-audit", "rustfmt"], True),
        ([], False),
    ],
)
def test_has_all_required_tools(names: list[str], expected: bool) -> None:
    assert RUST.has_all_required_tools(named(*names), now=NOW) is expected


def test_required_tool_passes_by_alternative() -> None:
    worker = Capabilities("w", {"fuzzing": (ToolCapability("afl++", True, ("honggfuzz",)),)})
    assert worker.has_all_required_tools(named("honggfuzz"), now=NOW)


def test_no_required_tools_is_vacuously_true() -> None:
    assert Capabilities("empty").has_all_required_tools(named(), now=NOW)


def test_all_tools_sorted_unique_with_alternatives() -> None:
    worker = Capabilities(
        "w",
        {
            "static_analysis": (ToolCapability("semgrep"), ToolCapability("clippy")),
            "security_scanning": (ToolCapability("bandit", alternatives=("semgrep",)),),
        },
    )
    assert worker.all_tools() == ["bandit", "clippy", "semgrep"]


def test_has_flag_missing_is_false() -> None:
    assert RUST.has_flag("llm_support")
    assert not RUST.has_flag("ast_support")
    assert not RUST.has_flag("never_declared")


def test_find_with_capability() -> None:
    py = Capabilities("py-1", {"static_analysis": (ToolCapability("ruff"),)})
    found = find_with_capability([RUST, py], "static_analysis", named("ruff", "cargo-fmt"), now=NOW)
    assert [w.id for w in found] == ["rust-1", "py-1"]
