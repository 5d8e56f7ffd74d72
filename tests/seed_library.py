"""The seed library (worker-capabilities) on the test side: its serde form and an oracle.

``library_tool`` and ``library_worker`` build declarations exactly as the library's serde
emits them (every field present). The ``oracle_*`` functions restate the library's own
functions over that raw JSON, independently of capsync's model, so a test can compare
capsync's answers with the library's for every declaration and query.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from typing import Any

DAY = 24 * 60 * 60
CATEGORY_FIELDS = {
    "static_analysis": "static_analysis_tools",
    "security_scanning": "security_scanning_tools",
    "dynamic_analysis": "dynamic_analysis_tools",
    "fuzzing": "fuzzing_tools",
    "test_framework": "test_framework_tools",
}
PERMISSION_NAMES = (
    "filesystem_access",
    "network_access",
    "process_spawn",
    "env_access",
    "system_access",
)


def library_hash(tool: dict[str, Any]) -> str:
    """generate_capability_hash, spelled out over the serde JSON."""
    p, e = tool["permissions"], tool["expiration"]
    text = "".join(
        [
            tool["tool_name"],
            str(tool["required"]).lower(),
            ",".join(tool["alternatives"]),
            *(str(p[name]).lower() for name in PERMISSION_NAMES),
            str(p["memory_limit_mb"]),
            str(p["cpu_limit_percent"]),
            str(p["timeout_seconds"]),
            str(e["expires_at"]),
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()


def library_tool(
    name: str,
    *,
    required: bool = False,
    alternatives: tuple[str, ...] = (),
    expires_at: int,
    revoked: bool = False,
    permissions: tuple[str, ...] = (),
    attestation: str = "none",
    now: int = 0,
) -> dict[str, Any]:
    """A ToolCapability as serde writes it. ``attestation``: none | valid | old | algorithm
    | unsigned | future (each breaks one of the library's checks, except valid)."""
    tool: dict[str, Any] = {
        "tool_name": name,
        "required": required,
        "alternatives": list(alternatives),
        "attestation": None,
        "permissions": {
            **{p: p in permissions for p in PERMISSION_NAMES},
            "memory_limit_mb": 256 if permissions else 128,
            "cpu_limit_percent": 75 if permissions else 50,
            "timeout_seconds": 60 if permissions else 30,
        },
        "expiration": {
            "expires_at": expires_at,
            "revoked": revoked,
            "revocation_reason": "compromised" if revoked else None,
            "revoked_at": now - 10 if revoked else None,
            "revoked_by": "security-team" if revoked else None,
        },
        "verified": False,
    }
    if attestation != "none":
        tool["attestation"] = {
            "capability_hash": library_hash(tool),
            "signature": "" if attestation == "unsigned" else "signature_abc_1",
            "public_key": "pubkey_attester-key",
            "timestamp": {"old": now - 366 * DAY, "future": now + 3600}.get(
                attestation, now - 30 * DAY
            ),
            "algorithm": "MD5-DSA" if attestation == "algorithm" else "SHA256-RSA",
            "attester": "ci-attester",
        }
        tool["verified"] = True
    return tool


def library_worker(worker_id: str, **categories: list[dict[str, Any]]) -> dict[str, Any]:
    worker: dict[str, Any] = {"id": worker_id}
    for category, field_name in CATEGORY_FIELDS.items():
        worker[field_name] = categories.get(category, [])
    worker["flags"] = {"llm_support": True}
    worker["metadata"] = {"version": "1.0.0"}
    return worker


def fleet(now: int) -> list[dict[str, Any]]:
    """Every combination of expiry (past, future, the minimal form's never), revocation
    and attestation outcome, one tool per worker, plus mixed workers and an empty one."""
    workers = []
    expiries = {"past": now - 100, "edge": now, "future": now + 3600}
    attestations = ("none", "valid", "old", "algorithm", "unsigned", "future")
    for (label, expires_at), revoked, attestation in itertools.product(
        expiries.items(), (False, True), attestations
    ):
        tool = library_tool(
            "clippy",
            required=True,
            alternatives=("cargo-clippy",),
            expires_at=expires_at,
            revoked=revoked,
            attestation=attestation,
            permissions=("filesystem_access",) if revoked else (),
            now=now,
        )
        wid = f"w-{label}-{'revoked' if revoked else 'live'}-{attestation}"
        workers.append(library_worker(wid, static_analysis=[tool]))
    live = library_tool(
        "semgrep",
        expires_at=now + 3600,
        attestation="valid",
        permissions=("network_access", "process_spawn"),
        now=now,
    )
    dead = library_tool("bandit", required=True, expires_at=now - 1, attestation="valid", now=now)
    workers.append(library_worker("mixed-1", security_scanning=[live, dead]))
    workers.append(
        library_worker(
            "mixed-2",
            security_scanning=[live],
            fuzzing=[library_tool("afl++", expires_at=now + 60, now=now)],
        )
    )
    workers.append(library_worker("empty"))
    return workers


def _tools(worker: dict[str, Any]) -> list[dict[str, Any]]:
    return [tool for field_name in CATEGORY_FIELDS.values() for tool in worker[field_name]]


def _satisfied(tool: dict[str, Any], checker: Callable[[str], bool], now: int) -> bool:
    if now > tool["expiration"]["expires_at"] or tool["expiration"]["revoked"]:
        return False
    return checker(tool["tool_name"]) or any(checker(alt) for alt in tool["alternatives"])


def oracle_has_capability(
    worker: dict[str, Any], category: str, checker: Callable[[str], bool], now: int
) -> bool:
    field_name = CATEGORY_FIELDS.get(category)
    if field_name is None:
        return False
    return any(_satisfied(tool, checker, now) for tool in worker[field_name])


def oracle_has_all_required(
    worker: dict[str, Any], checker: Callable[[str], bool], now: int
) -> bool:
    return all(_satisfied(t, checker, now) for t in _tools(worker) if t["required"])


def oracle_verify_attestation(tool: dict[str, Any], now: int) -> bool:
    a = tool["attestation"]
    if a is None:
        return False
    # u64 arithmetic as in a release build: a future timestamp wraps to a huge age.
    if (now - a["timestamp"]) % 2**64 > 365 * DAY:
        return False
    return a["algorithm"] == "SHA256-RSA" and a["signature"] != "" and a["public_key"] != ""


def oracle_verified(worker: dict[str, Any], now: int) -> bool:
    return all(
        now <= t["expiration"]["expires_at"]
        and not t["expiration"]["revoked"]
        and oracle_verify_attestation(t, now)
        for t in _tools(worker)
    )


def oracle_has_permission(worker: dict[str, Any], category: str, permission: str) -> bool:
    field_name = CATEGORY_FIELDS.get(category)
    if field_name is None or permission not in PERMISSION_NAMES:
        return False
    return any(tool["permissions"][permission] for tool in worker[field_name])


# Names as workers really write them: case variants, padding (a non-breaking space too),
# repeats, self-alternatives, and the encoding's separators. capsync keeps every one.
NAME_VARIANTS = ("clippy", "Clippy", " clippy ", "clippy\u00a0", "CLIPPY", "a,b", "x|y", "req!")


def variant_fleet(now: int, *, consul_meta: bool = True) -> list[dict[str, Any]]:
    """Workers in the library's full form whose names differ only in case or padding,
    repeat their alternatives or name themselves as one, with dotted metadata keys when
    ``consul_meta`` (only Consul's meta rules refuse those), and attested tools whose
    ``capability_hash`` covers the names as written."""
    later = now + 3600
    workers = []
    for index, name in enumerate(NAME_VARIANTS):
        tool = library_tool(
            name,
            required=index % 2 == 0,
            alternatives=(name, "Cargo-Clippy", "Cargo-Clippy", name.strip()),
            expires_at=later,
            attestation="valid",
            permissions=("network_access",) if index % 3 == 0 else (),
            now=now,
        )
        worker = library_worker(f"variant-{index}", static_analysis=[tool])
        worker["flags"] = {"LLM_support": index % 2 == 1, "llm_support": index % 2 == 0}
        workers.append(worker)
    # Two tools of one category that differ only in case are two tools.
    pair = library_worker(
        "case-pair",
        static_analysis=[
            library_tool("Semgrep", required=True, expires_at=later, now=now),
            library_tool("semgrep", expires_at=now - 10, now=now),
        ],
        fuzzing=[library_tool("AFL++", alternatives=("afl++",), expires_at=later, now=now)],
    )
    pair["metadata"] = {"version": "1.0.0", "Version": "2.0.0"}
    workers.append(pair)
    dotted = library_worker(
        "dotted", test_framework=[library_tool("PyTest", expires_at=later, now=now)]
    )
    if consul_meta:
        dotted["metadata"] = {"app.version": "1.2.3", "team/owner": "qa"}
    workers.append(dotted)
    return workers


def oracle_provides(worker: dict[str, Any], name: str, now: int, *, fold: bool = False) -> bool:
    """A live tool of any category named ``name`` (or with it as an alternative)."""
    same: Callable[[str], bool] = (
        (lambda n: n.casefold() == name.casefold()) if fold else (lambda n: n == name)
    )
    return any(_satisfied(tool, same, now) for tool in _tools(worker))
