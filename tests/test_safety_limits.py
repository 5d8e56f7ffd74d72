"""Limits in bytes, and batches split by size with honest counts (issue 10, points 6-7)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import Backend
from tests.consul_target import ConsulTarget
from tests.daemon_process import Daemon, wait_until
from tests.doubles.consul import ConsulDouble
from tests.doubles.faultproxy import Fault, FaultProxy, html
from tests.test_sync_contract import sync

# -- 6. Limits in bytes; nothing that is not Unicode reaches a registry --------------

INVALID = {
    "lone.json": (
        '{"id": "lone", "static_analysis_tools": [{"tool_name": "x\\udc00"}]}',
        "static_analysis_tools[0].tool_name",
        "lone surrogate U+DC00",
    ),
    "lone-key.json": (
        '{"id": "lone-key", "flags": {"f\\ud800": true}}',
        "(key)",
        "lone surrogate U+D800",
    ),
    # U+0000: PostgreSQL refuses it in JSONB; refused for every source and registry.
    "nul.json": ('{"id": "nul", "metadata": {"note": "a\\u0000b"}}', "metadata.note", "U+0000"),
    "nul-key.json": ('{"id": "nul-key", "flags": {"f\\u0000": true}}', "(key)", "U+0000"),
}


def test_limits_count_bytes_and_reject_lone_surrogates(backend: Backend, tmp_path: Path):
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    for name, (text, _, _) in INVALID.items():
        (fleet / name).write_text(text)
    (fleet / "fine.json").write_text('{"id": "fine", "metadata": {"note": "' + "é" * 256 + '"}}')

    result = sync(backend, "--source", f"file:{fleet}")

    assert result.returncode == 0, result.stderr
    assert "1 created" in result.stdout and f"{len(INVALID)} invalid" in result.stdout
    problems = [line for line in result.stderr.splitlines() if "invalid_declaration" in line]
    for name, (_, field, message) in INVALID.items():
        mine = [line for line in problems if f"{name} " in line]
        assert mine and field in mine[0] and message in mine[0], (name, problems)
    assert list(backend.services()) == ["fine"]


def test_long_reference_is_cut_on_a_character_boundary(backend: Backend, tmp_path: Path):
    deep = tmp_path / ("é" * 120) / ("ü" * 120) / ("ß" * 120)  # ~ 720 bytes, ~ 400 chars
    deep.mkdir(parents=True)
    (deep / "w.json").write_text('{"id": "deep"}')

    result = sync(backend, "--source", f"file:{tmp_path}")

    assert result.returncode == 0 and "1 created" in result.stdout, result.stderr
    ref = backend.services()["deep"].meta["capsync-ref"]
    assert len(ref.encode()) <= 512 and str(deep / "w.json").startswith(ref)
    again = sync(backend, "--source", f"file:{tmp_path}")
    assert "1 unchanged" in again.stdout


# -- 7. Batches split by size as well as count; the summary counts what was written --


def fleet_of(directory: Path, count: int, pad: int = 300) -> None:
    directory.mkdir()
    for i in range(count):
        (directory / f"w{i:03}.json").write_text(
            json.dumps({"id": f"w-{i:03}", "metadata": {"pad": "x" * pad}})
        )


@pytest.fixture
def proxied() -> Iterator[tuple[ConsulTarget, FaultProxy]]:
    with ConsulDouble() as double, FaultProxy(double.address) as proxy:
        yield ConsulTarget(double.address, double), proxy


def test_batches_split_by_bytes_and_an_entry_too_big_alone_is_refused(
    proxied: tuple[ConsulTarget, FaultProxy], tmp_path: Path
):
    target, proxy = proxied
    fleet_of(tmp_path / "fleet", 40)
    huge = {"id": "huge", "metadata": {f"k{i:02}": "y" * 500 for i in range(40)}}
    (tmp_path / "fleet" / "huge.json").write_text(json.dumps(huge))
    env = {"CONSUL_HTTP_ADDR": proxy.address, "CAPSYNC_CONSUL__MAX_TXN_BYTES": "8192"}

    result = sync(target_backend(target), "--source", f"file:{tmp_path / 'fleet'}", env=env)

    assert result.returncode == 1
    assert "40 created" in result.stdout and "1 refused" in result.stdout, result.stdout
    assert "event=entry_refused id=huge" in result.stderr and "max_txn_bytes" in result.stderr
    sizes = [size for method, path, size in proxy.sizes if path.startswith("/v1/txn")]
    assert len(sizes) >= 4 and max(sizes) <= 8192  # 40 entries of ~ 700 bytes
    assert f"({len(sizes)} write requests)" in result.stdout
    assert sorted(target.services()) == [f"w-{i:03}" for i in range(40)]


FAILED_BATCH = {
    "413-refused": (Fault(413, b"Request body too large"), "refused"),
    "502-interrupted": (html(502), "interrupted"),
}


@pytest.mark.parametrize(("fault", "counted"), list(FAILED_BATCH.values()), ids=list(FAILED_BATCH))
def test_a_failed_batch_never_stops_the_next(
    proxied: tuple[ConsulTarget, FaultProxy], tmp_path: Path, fault: Fault, counted: str
):
    target, proxy = proxied
    fleet_of(tmp_path / "fleet", 30, pad=10)
    env = {"CONSUL_HTTP_ADDR": proxy.address, "CAPSYNC_CONSUL__MAX_TXN_OPS": "10"}
    fault.count = 1
    proxy.inject("PUT", "/v1/txn", fault)

    result = sync(target_backend(target), "--source", f"file:{tmp_path / 'fleet'}", env=env)

    assert result.returncode == 1
    written = len(target.services())
    assert 0 < written < 30
    assert f"{written} created" in result.stdout and f"{30 - written} {counted}" in result.stdout
    again = sync(target_backend(target), "--source", f"file:{tmp_path / 'fleet'}", env=env)
    assert f"{30 - written} created" in again.stdout and len(target.services()) == 30


def test_sigterm_mid_apply_reports_what_was_written(tmp_path: Path):
    fleet_of(tmp_path / "fleet", 1500, pad=10)
    with ConsulDouble() as double:
        double.delay_requests(0.05)
        target = ConsulTarget(double.address, double)
        proc = Daemon(
            [
                "--owner",
                target.owner,
                "--source",
                f"file:{tmp_path / 'fleet'}",
                "--interval",
                "300s",
            ],
            env=target.env(),
        ).started()
        wait_until(lambda: double.count("PUT", "/v1/txn") >= 2, 20)
        assert proc.stop() == 0
        double.clear_faults()
        written = len(target.services())
        [cycle] = [line for line in proc.lines if "event=cycle" in line]
        assert f" {written} created" in cycle and f"{1500 - written} unsent" in cycle, cycle


def target_backend(target: ConsulTarget) -> Backend:
    return Backend("double", "consul", target.env(), target, owner=target.owner)
