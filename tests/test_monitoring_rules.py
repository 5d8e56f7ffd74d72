"""The shipped alert rules, checked and unit-tested by Prometheus's own promtool: every
alert fires on the series that should raise it, with the summary and description an
operator reads, and stays quiet on the healthy (or not yet long enough) ones."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.prometheus import RULES, promtool

INSTANCE = {"job": "capsync", "instance": "capsync-1:9105"}


@dataclass(frozen=True)
class Case:
    """Series (name{labels} -> promtool's expanding notation), and when to evaluate."""

    series: dict[str, str]
    at: str
    labels: dict[str, str] | None = None  # the alert's labels beyond the instance's
    value: str = ""  # what {{ $value }} renders to


@dataclass(frozen=True)
class AlertCases:
    fires: Case
    quiet: tuple[Case, ...]


def series(name: str, **labels: str) -> str:
    every = {**INSTANCE, **labels}
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(every.items())) + "}"


CASES: dict[str, AlertCases] = {
    "CapsyncDown": AlertCases(
        Case({series("up"): "0x5"}, "3m", {}),
        (Case({series("up"): "1x5"}, "3m"), Case({series("up"): "1 0x4"}, "2m")),
    ),
    "CapsyncNotReady": AlertCases(
        Case({series("capsync_ready"): "0x15"}, "11m", {}),
        (Case({series("capsync_ready"): "1x15"}, "11m"),),
    ),
    "CapsyncCyclesFailing": AlertCases(
        Case({series("capsync_consecutive_failed_cycles"): "0+1x10"}, "9m", {}, "9"),
        (Case({series("capsync_consecutive_failed_cycles"): "0 1 2 0 1 2 0 1 2 0 1"}, "10m"),),
    ),
    "CapsyncRegistryFailing": AlertCases(
        Case(
            {series("capsync_registry_up", registry="consul"): "0x10"}, "6m", {"registry": "consul"}
        ),
        (Case({series("capsync_registry_up", registry="consul"): "1x10"}, "6m"),),
    ),
    "CapsyncSourceFrozen": AlertCases(
        Case({series("capsync_source_up", source="docker"): "0x15"}, "11m", {"source": "docker"}),
        (Case({series("capsync_source_up", source="docker"): "0x3 1x12"}, "11m"),),
    ),
    "CapsyncDeletionsHeld": AlertCases(
        Case(
            {series("capsync_deletions_held", registry="consul"): "6x20"},
            "16m",
            {"registry": "consul"},
            "6",
        ),
        (Case({series("capsync_deletions_held", registry="consul"): "0x20"}, "16m"),),
    ),
    "CapsyncConflicts": AlertCases(
        Case(
            {series("capsync_conflicts", registry="redis"): "2x20"},
            "16m",
            {"registry": "redis"},
            "2",
        ),
        (Case({series("capsync_conflicts", registry="redis"): "0x20"}, "16m"),),
    ),
    "CapsyncEntriesRefused": AlertCases(
        Case(
            {
                series(
                    "capsync_registry_operations_unwritten_total",
                    registry="redis",
                    reason="refused",
                ): "0 0 0 1 1 1"
            },
            "5m",
            {"registry": "redis", "reason": "refused"},
        ),
        (
            Case(
                {
                    series(
                        "capsync_registry_operations_unwritten_total",
                        registry="redis",
                        reason="refused",
                    ): "0x20",
                    # Unsent when stopping is caught up by the next cycle: no alert.
                    series(
                        "capsync_registry_operations_unwritten_total",
                        registry="redis",
                        reason="unsent",
                    ): "0 0 5 5 5",
                },
                "4m",
            ),
        ),
    ),
    "CapsyncInboxBacklogGrowing": AlertCases(
        Case(
            {
                series(
                    "capsync_inbox_registrations", source="push", state="live"
                ): "100x60 100+20x60",
                series("capsync_inbox_registrations", source="push", state="expired"): "0x120",
            },
            "90m",
            {"source": "push"},
            "680",  # 100 until 61m, then 20 more a minute
        ),
        (
            Case(
                {series("capsync_inbox_registrations", source="push", state="live"): "100x120"},
                "90m",
            ),
            # Doubled, but small: a fleet starting.
            Case(
                {
                    series(
                        "capsync_inbox_registrations", source="push", state="live"
                    ): "10x60 10+2x60"
                },
                "90m",
            ),
        ),
    ),
    "CapsyncAmqpOutboxGrowing": AlertCases(
        Case({series("capsync_amqp_events_outbox"): "0+20x40"}, "30m", {}, "600"),
        (
            Case({series("capsync_amqp_events_outbox"): "500x40"}, "30m"),  # large, draining
            Case({series("capsync_amqp_events_outbox"): "0+20x40"}, "15m"),  # not for long
        ),
    ),
    "CapsyncLeaseExpiriesSpiking": AlertCases(
        Case(
            {series("capsync_lease_expiries_total", source="push"): "0+1x70 70+10x20"},
            "80m",
            {"source": "push"},
        ),
        (Case({series("capsync_lease_expiries_total", source="push"): "0+1x90"}, "80m"),),
    ),
    "CapsyncWatchersDropped": AlertCases(
        Case({series("capsync_event_subscribers_dropped_total"): "0 0 0 1 1 1 1"}, "5m", {}),
        (Case({series("capsync_event_subscribers_dropped_total"): "3x30"}, "25m"),),
    ),
    "CapsyncEventsDropped": AlertCases(
        Case({series("capsync_amqp_events_dropped_total"): "0 0 0 40 40 40"}, "5m", {}),
        (Case({series("capsync_amqp_events_dropped_total"): "0x10"}, "5m"),),
    ),
    "CapsyncWriterClaimHeldElsewhere": AlertCases(
        Case(
            {series("capsync_registry_claim_held_elsewhere", registry="sqlite"): "1x5"},
            "2m",
            {"registry": "sqlite"},
        ),
        (Case({series("capsync_registry_claim_held_elsewhere", registry="sqlite"): "0x5"}, "2m"),),
    ),
}


def rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def render(template: str, labels: dict[str, str], value: str) -> str:
    """The two template forms the rules use: {{ $labels.NAME }} and {{ $value }}."""

    def label(match: re.Match[str]) -> str:
        return labels[match.group(1)]  # a label the alert does not carry fails here

    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", label, template)
    return text.replace("{{ $value }}", value)


def test_check_rules_finds_nothing():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_every_alert_has_its_cases_and_says_what_to_do():
    assert set(CASES) == set(rules())
    for name, rule in rules().items():
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description"}, name
        assert len(annotations["description"]) > 100, name
        assert rule["labels"]["severity"] in {"critical", "warning"}, name


def unit_tests() -> dict[str, Any]:
    """promtool's test file: per alert one case where it fires and its quiet ones."""
    known = rules()
    tests = []
    for name, cases in CASES.items():
        rule = known[name]
        fires = cases.fires
        labels = {**INSTANCE, **(fires.labels or {})}
        expected = {
            "exp_labels": {**labels, **rule["labels"]},
            "exp_annotations": {
                key: render(text, labels, fires.value) for key, text in rule["annotations"].items()
            },
        }
        tests.append(_test(fires, name, [expected]))
        tests.extend(_test(quiet, name, []) for quiet in cases.quiet)
    return {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": tests}


def _test(case: Case, alert: str, expected: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
        "alert_rule_test": [{"eval_time": case.at, "alertname": alert, "exp_alerts": expected}],
    }


def test_every_alert_fires_when_it_should_and_only_then(tmp_path: Path):
    test_file = tmp_path / "capsync.rules.test.yml"
    test_file.write_text(yaml.safe_dump(unit_tests(), sort_keys=False))
    result = promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_wrong_expectation_fails_promtool(tmp_path: Path):
    """The unit tests can fail: a quiet series expected to fire is reported."""
    name = "CapsyncRegistryFailing"
    suite = unit_tests()
    firing = next(
        test["alert_rule_test"][0]["exp_alerts"]
        for test in suite["tests"]
        if test["alert_rule_test"][0]["alertname"] == name
    )
    wrong = _test(CASES[name].quiet[0], name, firing)
    test_file = tmp_path / "wrong.test.yml"
    test_file.write_text(yaml.safe_dump({**suite, "tests": [wrong]}, sort_keys=False))
    result = promtool("test", "rules", str(test_file))
    assert result.returncode != 0
    assert name in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("good", "broken"),
    [("expr: capsync_ready == 0", "expr: capsync_ready =="), ("for: 10m", "for: soon")],
)
def test_check_rules_rejects_a_broken_rule(tmp_path: Path, good: str, broken: str):
    bad = tmp_path / "bad.rules.yml"
    bad.write_text(RULES.read_text().replace(good, broken, 1))
    result = promtool("check", "rules", str(bad))
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr
