"""The registry encoding: round trip, the contract's layout, Consul's limits."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from config.errors import DeclarationError
from discovery import codec, schema
from tests.conftest import SEED_CRD_SPEC

NAME = st.from_regex(r"[a-z0-9][a-z0-9+._/-]{0,15}", fullmatch=True)
KEY = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
TOOL = st.fixed_dictionaries(
    {"tool_name": NAME},
    optional={"required": st.booleans(), "alternatives": st.lists(NAME, max_size=4)},
)
DECLARATION = st.fixed_dictionaries(
    {"id": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,30}", fullmatch=True)},
    optional={
        "static_analysis_tools": st.lists(TOOL, max_size=4, unique_by=lambda t: t["tool_name"]),
        "security_scanning_tools": st.lists(TOOL, max_size=3, unique_by=lambda t: t["tool_name"]),
        "dynamic_analysis_tools": st.lists(TOOL, max_size=2, unique_by=lambda t: t["tool_name"]),
        "fuzzing_tools": st.lists(TOOL, max_size=2, unique_by=lambda t: t["tool_name"]),
        "test_framework_tools": st.lists(TOOL, max_size=3, unique_by=lambda t: t["tool_name"]),
        "flags": st.dictionaries(KEY, st.booleans(), max_size=6),
        "metadata": st.dictionaries(
            KEY.filter(lambda k: not codec.reserved_reason(k)),
            st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40),
            max_size=8,
        ),
    },
)
META_KEY = re.compile(r"[A-Za-z0-9_-]+")


def encode(data: dict[str, Any]) -> codec.Entry:
    caps = schema.validate(data, ref="t")
    return codec.encode(
        caps, codec.Provenance(service="worker", owner="host-1", source="file", ref="/x.json")
    )


@settings(max_examples=300, deadline=None)
@given(DECLARATION)
def test_round_trip_and_limits(data: dict[str, Any]) -> None:
    caps = schema.validate(data, ref="t")
    entry = codec.encode(
        caps, codec.Provenance(service="worker", owner="host-1", source="file", ref="/x.json")
    )
    assert codec.decode(entry) == caps
    assert list(entry.tags) == caps.all_tools()
    assert len(entry.meta) <= codec.MAX_META_PAIRS
    for key, value in entry.meta.items():
        assert META_KEY.fullmatch(key) and len(key) <= codec.MAX_META_KEY
        assert not key.startswith("consul-")
        assert len(value) <= codec.MAX_META_VALUE


def test_contract_layout_for_seed_crd() -> None:
    entry = encode(SEED_CRD_SPEC)
    assert entry.id == "rust-worker-1" and entry.service == "worker"
    assert entry.tags == ("cargo-audit", "cargo-fmt", "clippy", "rustfmt")
    digest = entry.meta["capsync-digest"]
    assert re.fullmatch(r"[0-9a-f]{32}", digest)
    assert dict(entry.meta) == {
        "external-source": "capsync",
        "capsync-owner": "host-1",
        "capsync-source": "file",
        "capsync-ref": "/x.json",
        "capsync-digest": digest,
        "static_analysis": "clippy!,rustfmt|cargo-fmt",
        "security_scanning": "cargo-audit!",
        "flag-ast_support": "true",
        "flag-llm_support": "true",
        "version": "1.0.0",
        "platform": "linux",
    }


def test_digest_follows_content_and_origin() -> None:
    base = encode(SEED_CRD_SPEC)
    assert encode(SEED_CRD_SPEC) == base
    changed = encode({**SEED_CRD_SPEC, "flags": {"ast_support": False}})
    assert changed.meta["capsync-digest"] != base.meta["capsync-digest"]
    caps = schema.validate(SEED_CRD_SPEC, ref="t")
    moved = codec.encode(
        caps, codec.Provenance(service="worker", owner="host-1", source="file", ref="/y.json")
    )
    assert moved.meta["capsync-digest"] != base.meta["capsync-digest"]


def test_long_reference_is_cut_to_consul_limit() -> None:
    caps = schema.validate({"id": "w"}, ref="t")
    entry = codec.encode(
        caps, codec.Provenance(service="s", owner="o", source="file", ref="r" * 600)
    )
    assert len(entry.ref) == codec.MAX_META_VALUE


def test_decode_rejects_a_bad_flag_value() -> None:
    entry = codec.Entry("w", "worker", (), {"flag-x": "maybe"})
    try:
        codec.decode(entry)
    except DeclarationError as exc:
        assert exc.problems[0][0] == "ServiceMeta.flag-x"
    else:
        raise AssertionError("decoded a flag that is not true|false")
