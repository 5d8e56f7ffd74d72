"""The consul source: services others registered, declaring capabilities in their meta."""

from __future__ import annotations

import json
import threading
import time

from config.errors import SourceError
from daemon.liveness import ConsulLiveness
from discovery.consul.client import ConsulClient, ConsulEndpoint
from discovery.sources.consul import ConsulSource
from tests.conftest import SEED_LABEL, run_cli
from tests.consul_target import ConsulTarget, needs_double
from tests.daemon_process import Daemon, wait_until


def register(target: ConsulTarget, node: str, service: dict) -> None:
    body = {"Node": node, "Address": "10.0.0.9", "Service": service}
    assert target.put("/v1/catalog/register", body).status_code == 200


def watching_builders(consul: ConsulTarget) -> Daemon:
    """A daemon with the consul source on service ``builders`` and the Consul registry."""
    return Daemon(
        ["--owner", consul.owner, "--source", "consul:builders", "--interval", "300s"],
        env=consul.env(),
    ).started()


def test_declarations_from_other_services(consul: ConsulTarget):
    register(
        consul,
        "ci-1",
        {
            "ID": "rust-1",
            "Service": "builders",
            "Tags": ["analysis"],
            "Address": "10.0.0.21",
            "Meta": {"worker-capabilities": SEED_LABEL},
        },
    )
    register(
        consul,
        "ci-2",
        {
            "ID": "py-7",
            "Service": "builders",
            "Tags": ["analysis"],
            "Meta": {
                "static_analysis": "ruff!,mypy|pyright",
                "flag-llm_support": "true",
                "team": "py",
            },
        },
    )
    register(
        consul,
        "ci-3",
        {
            "ID": "bad-1",
            "Service": "builders",
            "Tags": ["analysis"],
            "Meta": {"worker-capabilities": '{"id": "x", "flags": 1}'},
        },
    )
    register(consul, "ci-4", {"ID": "web-1", "Service": "web", "Meta": {"version": "2"}})
    register(
        consul,
        "ci-5",
        {
            "ID": "other",
            "Service": "builders",
            "Tags": ["other"],
            "Meta": {"worker-capabilities": '{"id": "untagged"}'},
        },
    )

    result = run_cli(
        "run",
        "--once",
        "--owner",
        consul.owner,
        "--source",
        "consul:tag=analysis",
        env=consul.env(),
    )
    assert result.returncode == 0, result.stderr
    services = consul.services()
    assert set(services) == {"rust-worker", "py-7"}
    assert services["rust-worker"]["ServiceAddress"] == "10.0.0.21"
    assert services["rust-worker"]["ServiceMeta"]["capsync-ref"] == "ci-1/rust-1"
    assert services["py-7"]["ServiceMeta"]["static_analysis"] == "ruff!,mypy|pyright"
    assert services["py-7"]["ServiceMeta"]["team"] == "py"
    assert "ref=ci-3/bad-1 field=flags" in result.stderr

    by_name = run_cli(
        "run", "--once", "--owner", consul.owner, "--source", "consul:builders", env=consul.env()
    )
    assert by_name.returncode == 0
    assert "untagged" in consul.services()


def test_capsync_entries_are_never_read_back(consul: ConsulTarget, tmp_path):
    (tmp_path / "w.json").write_text(json.dumps({"id": "from-file"}))
    other_owner = ConsulTarget(consul.address, consul.double)
    assert (
        run_cli(
            "run",
            "--once",
            "--owner",
            other_owner.owner,
            "--source",
            f"file:{tmp_path}",
            env=consul.env(),
        ).returncode
        == 0
    )
    # Another capsync's entries sit in the same service; a consul source must skip them.
    result = run_cli(
        "run", "--once", "--owner", consul.owner, "--source", "consul:worker", env=consul.env()
    )
    assert result.returncode == 0, result.stderr
    assert "0 created" in result.stdout and consul.services() == {}


def test_a_registration_elsewhere_triggers_a_sync(consul: ConsulTarget):
    proc = watching_builders(consul)
    try:
        proc.wait_for(lambda line: "event=cycle" in line)
        register(
            consul,
            "ci-9",
            {
                "ID": "late",
                "Service": "builders",
                "Meta": {"worker-capabilities": '{"id": "late-one"}'},
            },
        )
        wait_until(lambda: "late-one" in consul.services(), 5, 0.05)
        proc.wait_for(lambda line: "event=cycle" in line and "1 created" in line)
        cycles = len([line for line in proc.lines if "event=cycle" in line])
        time.sleep(1.5)
        # capsync's own write moved the catalogue index but changed nothing it lists:
        # no further cycle follows.
        assert len([line for line in proc.lines if "event=cycle" in line]) == cycles
    finally:
        assert proc.stop() == 0


def test_the_source_and_the_registry_liveness_share_one_blocking_query(consul: ConsulTarget):
    """A consul source and the Consul registry's liveness watch long-poll the same
    endpoint: one blocking query serves both (as consul-template de-duplicates
    identical watches), and both still hear what it answers."""
    needs_double(consul)
    assert consul.double is not None
    proc = watching_builders(consul)
    try:
        proc.wait_for(lambda line: "event=cycle" in line)
        consul.double.reset_counts()
        catalogue = ("GET", "/v1/catalog/services")
        wait_until(lambda: consul.double is not None and consul.double.count(*catalogue) >= 3)
        register(
            consul,
            "ci-9",
            {"ID": "late", "Service": "builders", "Meta": {"worker-capabilities": '{"id": "l"}'}},
        )
        wait_until(lambda: "l" in consul.services(), 10, 0.05)
        assert consul.double.most_in_flight(*catalogue) == 1
    finally:
        assert proc.stop() == 0


def test_a_shared_query_tells_each_follower_of_an_outage_and_the_recovery(
    consul: ConsulTarget,
):
    """The liveness watch and the source follow one query; Consul failing and coming
    back reaches the liveness watch as before, and the source keeps noticing changes."""
    needs_double(consul)
    assert consul.double is not None
    endpoint = ConsulEndpoint(consul.address)
    liveness = ConsulLiveness(ConsulClient(endpoint))
    source = ConsulSource(ConsulClient(endpoint, error=SourceError), services=["builders"])
    heard: list[str] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=part.watch, args=(heard.append, stop), daemon=True)
        for part in (liveness, source)
    ]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: consul.double is not None and consul.double.count("GET") >= 2)
        consul.double.fail_requests()
        wait_until(lambda: "registry unreachable" in heard)
        consul.double.clear_faults()
        wait_until(lambda: "registry answers again" in heard)
        declares = {"worker-capabilities": '{"id": "n"}'}
        register(consul, "ci-9", {"ID": "new", "Service": "builders", "Meta": declares})
        wait_until(lambda: any(line.startswith("consul catalogue changed") for line in heard))
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
        liveness.close()
        source.close()
    assert consul.double.most_in_flight("GET", "/v1/catalog/services") == 1


def test_an_unchanged_catalogue_is_not_read_again_and_a_change_is(consul: ConsulTarget):
    """While Consul's index for the listed service has not moved, the source hands back
    what it listed (the same listing); a registration, a change or a removal moves it,
    and the next listing has it."""
    register(
        consul, "ci-1", {"ID": "a-1", "Service": "builders", "Meta": {"static_analysis": "ruff"}}
    )
    source = ConsulSource(ConsulClient(ConsulEndpoint(consul.address)), services=["builders"])
    try:
        first = source.list()
        assert [d.default_id for d in first.declarations] == ["a-1"]
        assert source.list() is first
        register(
            consul,
            "ci-1",
            {"ID": "a-1", "Service": "builders", "Meta": {"static_analysis": "mypy"}},
        )
        changed = source.list()
        assert changed is not first
        [declaration] = changed.declarations
        body = json.dumps(declaration.body())
        assert "mypy" in body and "ruff" not in body
        register(
            consul,
            "ci-2",
            {"ID": "b-1", "Service": "builders", "Meta": {"static_analysis": "ruff"}},
        )
        assert sorted(d.default_id for d in source.list().declarations) == ["a-1", "b-1"]
    finally:
        source.close()
