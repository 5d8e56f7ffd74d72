"""Differential: declarations in the library's serde form, capsync's answers against the
library's, the library's constants and documented examples, and the input rules."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from config.errors import DeclarationError
from daemon.query import Query
from discovery import schema, seed_json, tool_terms
from discovery.model import Capabilities
from tests.conftest import run_cli
from tests.seed_library import (
    CATEGORY_FIELDS,
    DAY,
    PERMISSION_NAMES,
    fleet,
    library_tool,
    library_worker,
    oracle_has_all_required,
    oracle_has_capability,
    oracle_has_permission,
    oracle_verified,
)

NOW = 1_767_225_600
FLEET = fleet(NOW)
NAMES = [
    set(),
    {"clippy"},
    {"cargo-clippy"},
    {"semgrep"},
    {"bandit"},
    {"semgrep", "bandit"},
    {"afl++"},
    {"rustfmt"},
]


def caps_of(worker: dict[str, Any]) -> Capabilities:
    return seed_json.from_seed(worker, ref=worker["id"])


@pytest.mark.parametrize("worker", FLEET, ids=[w["id"] for w in FLEET])
def test_library_form_round_trips_exactly(worker: dict[str, Any]) -> None:
    assert seed_json.to_seed(caps_of(worker)) == worker


@pytest.mark.parametrize("worker", FLEET, ids=[w["id"] for w in FLEET])
def test_every_query_gives_the_library_answer(worker: dict[str, Any]) -> None:
    caps = caps_of(worker)
    for now in (NOW - 200, NOW, NOW + 1, NOW + 7200, NOW + 400 * DAY):
        for names in NAMES:
            checker = names.__contains__
            for category in [*CATEGORY_FIELDS, "no_such_category"]:
                assert caps.has_capability(category, checker, now=now) == (
                    oracle_has_capability(worker, category, checker, now)
                ), (category, names)
                if category in CATEGORY_FIELDS and names:
                    query = Query(category=category, tools=tuple(sorted(names)), now=now)
                    assert query.matches(caps) == oracle_has_capability(
                        worker, category, checker, now
                    )
            assert caps.has_all_required_tools(checker, now=now) == (
                oracle_has_all_required(worker, checker, now)
            )
        assert Query(verified=True, now=now).matches(caps) == oracle_verified(worker, now)
        for category in CATEGORY_FIELDS:
            for permission in (*PERMISSION_NAMES, "root_access"):
                assert Query(permissions=((category, permission),), now=now).matches(caps) == (
                    oracle_has_permission(worker, category, permission)
                )


@pytest.mark.parametrize(
    ("worker_id", "clippy_found", "verified"),
    [
        ("w-past-live-none", False, False),  # expired: provides nothing
        ("w-edge-live-valid", True, True),  # now == expires_at is not expired
        ("w-future-live-valid", True, True),
        ("w-future-revoked-valid", False, False),  # revoked: provides nothing
        ("w-future-live-none", True, False),  # not attested
        ("w-future-live-old", True, False),  # attestation over 365 days old
        ("w-future-live-algorithm", True, False),  # not SHA256-RSA
        ("w-future-live-unsigned", True, False),  # empty signature
        ("w-future-live-future", True, False),  # timestamp ahead of now
        ("mixed-1", False, False),  # one tool expired
        ("empty", False, True),  # no tools: verified, as in the library
    ],
)
def test_semantics_cases(worker_id: str, clippy_found: bool, verified: bool) -> None:
    caps = caps_of(next(w for w in FLEET if w["id"] == worker_id))
    assert caps.has_capability("static_analysis", {"clippy"}.__contains__, now=NOW) is (
        clippy_found
    )
    assert caps.verify_all_capabilities(NOW) is verified


def test_permissions_ignore_expiry_as_the_library_does() -> None:
    revoked = caps_of(next(w for w in FLEET if w["id"] == "w-past-revoked-none"))
    assert revoked.has_required_permissions("static_analysis", "filesystem_access")
    assert not revoked.has_required_permissions("static_analysis", "network_access")
    assert not revoked.has_required_permissions("static_analysis", "root_access")
    assert not revoked.has_required_permissions("nonsense", "filesystem_access")


def test_the_library_constants() -> None:
    minimal = schema.validate({"id": "w", "fuzzing_tools": [{"tool_name": "afl++"}]}, ref="t")
    [tool] = seed_json.to_seed(minimal)["fuzzing_tools"]
    assert tool["permissions"] == {
        "filesystem_access": False,
        "network_access": False,
        "process_spawn": False,
        "env_access": False,
        "system_access": False,
        "memory_limit_mb": 128,
        "cpu_limit_percent": 50,
        "timeout_seconds": 30,
    }
    assert tool["expiration"] == {
        "expires_at": 2**53 - 1,
        "revoked": False,
        "revocation_reason": None,
        "revoked_at": None,
        "revoked_by": None,
    }
    assert tool["attestation"] is None and tool["verified"] is False
    assert tool_terms.ATTESTATION_VALID_SECONDS == 365 * DAY
    assert tool_terms.ATTESTATION_ALGORITHM == "SHA256-RSA"


def test_capability_hash_is_the_library_one() -> None:
    tool = library_tool(
        "clippy",
        required=True,
        alternatives=("cargo-clippy", "clippy-driver"),
        expires_at=1767225600,
        attestation="valid",
        now=NOW,
    )
    expected = hashlib.sha256(
        b"clippytruecargo-clippy,clippy-driverfalsefalsefalsefalsefalse12850301767225600"
    ).hexdigest()
    assert tool["attestation"]["capability_hash"] == expected
    caps = caps_of(library_worker("w", static_analysis=[tool]))
    [parsed] = caps.tools["static_analysis"]
    assert parsed.hash_matches()
    tampered = json.loads(json.dumps(tool))
    tampered["expiration"]["expires_at"] += 1
    [changed] = caps_of(library_worker("w", static_analysis=[tampered])).tools["static_analysis"]
    assert not changed.hash_matches()


def test_documented_examples_in_both_forms() -> None:
    # The guide's Docker label (minimal) and its CRD spec (camelCase), with and without
    # the library's terms.
    label = {
        "id": "rust-worker",
        "static_analysis_tools": [{"tool_name": "clippy", "required": True, "alternatives": []}],
    }
    assert caps_of(label).has_capability("static_analysis", {"clippy"}.__contains__, now=NOW)
    crd = {
        "id": "rust-worker-1",
        "staticAnalysisTools": [
            {
                "toolName": "clippy",
                "required": True,
                "permissions": {"filesystemAccess": True, "cpuLimitPercent": 10},
                "expiration": {"expiresAt": NOW + 10, "revoked": False},
            }
        ],
    }
    caps = schema.validate(crd, ref="crd")
    [tool] = caps.tools["static_analysis"]
    assert tool.permissions.filesystem_access and tool.permissions.cpu_limit_percent == 10
    assert tool.permissions.memory_limit_mb == 128 and tool.expiration.expires_at == NOW + 10


@pytest.mark.parametrize(
    ("terms", "where", "words"),
    [
        (
            {"permissions": {"memory_limit_mb": -1}},
            "permissions.memory_limit_mb",
            "greater than or equal to 0",
        ),
        (
            {"permissions": {"cpu_limit_percent": 101}},
            "permissions.cpu_limit_percent",
            "less than or equal to 100",
        ),
        ({"expiration": {"expires_at": "1767225600"}}, "expiration.expires_at", "valid integer"),
        ({"expiration": {"expires_at": 1.5}}, "expiration.expires_at", "valid integer"),
        ({"expiration": {"expires_at": 2**64}}, "expiration.expires_at", "less than or equal"),
        ({"permissions": {"network": True}}, "permissions.network", "unknown field"),
        ({"attestation": {"signature": "x"}}, "attestation.capabilityHash", "Field required"),
        ({"verified": "yes"}, "verified", "valid boolean"),
    ],
)
def test_bad_terms_are_clear_errors_with_the_field_path(
    terms: dict[str, Any], where: str, words: str
) -> None:
    data = {"id": "w", "fuzzing_tools": [{"tool_name": "afl++", **terms}]}
    with pytest.raises(DeclarationError) as caught:
        schema.validate(data, ref="bad.json")
    assert any(
        loc == f"fuzzing_tools[0].{where}" and words in msg for loc, msg in caught.value.problems
    ), caught.value.problems


def test_validate_prints_the_library_form(tmp_path: Path) -> None:
    worker = next(w for w in FLEET if w["id"] == "mixed-1")
    (tmp_path / "w.json").write_text(json.dumps(worker))
    result = run_cli("validate", "--json", str(tmp_path / "w.json"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [worker]
