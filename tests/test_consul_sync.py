"""What only the Consul registry has: the node contract, request budgets, txn refusals,
ACL tokens and an unreachable agent. Shared scenarios live in test_sync_contract.py."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import pytest

from config.errors import RegistryError
from daemon.cycle import Syncer
from daemon.plan import Changes
from daemon.registry.consul import ConsulRegistry
from daemon.registry.ownership import Ownership
from daemon.settings_model import SETTINGS
from daemon.wiring import build_registries, build_sources
from discovery import codec, schema
from discovery.consul.client import ConsulClient, ConsulEndpoint
from tests.conftest import run_cli
from tests.consul_target import ConsulTarget, needs_double
from tests.doubles.consul import ConsulDouble
from tests.test_sync_contract import EXAMPLES, write_fleet


def sync(target: ConsulTarget, *args: str, env: dict[str, str] | None = None):
    return run_cli(
        "run",
        "--once",
        "--owner",
        target.owner,
        "--service",
        target.service,
        *args,
        env=target.env(**(env or {})),
    )


def test_cold_sync_of_1000_within_request_budget(consul: ConsulTarget, tmp_path: Path):
    write_fleet(tmp_path / "fleet", 1000)
    result = sync(consul, "--source", f"file:{tmp_path / 'fleet'}")
    assert result.returncode == 0, result.stderr
    services = consul.services()
    assert len(services) == 1000
    w0 = services["w-0000"]
    assert w0["ServiceWeights"] == {"Passing": 1, "Warning": 1}
    marks = json.loads(w0["NodeMeta"].pop("capsync-guard-worker"))
    assert w0["NodeMeta"] == {
        "external-node": "true",
        "external-source": "capsync",
        "capsync-owner": consul.owner,
        "capsync-writer-worker": socket.gethostname(),
    }
    assert marks["*"][0] == 1000  # the guard's marks, recorded with the first write
    if consul.double:
        # Two ops an entry (its service and its check), one reserved for the node's.
        assert consul.writes() <= math.ceil(1000 / ((64 - 1) // 2)) + 3
        consul.double.reset_counts()
        again = sync(consul, "--source", f"file:{tmp_path / 'fleet'}")
        assert "1000 unchanged" in again.stdout
        # A new process reads the checks' index, the node's services and their checks
        # once, and writes nothing.
        assert consul.double.requests == [
            ("GET", f"/v1/health/node/{consul.node}"),
            ("GET", f"/v1/catalog/node-services/{consul.node}"),
            ("GET", f"/v1/health/node/{consul.node}"),
        ]


def test_unowned_entry_on_own_node_is_a_conflict_never_touched(consul: ConsulTarget):
    squatter = {
        "Node": consul.node,
        "Address": "127.0.0.1",
        "NodeMeta": {
            "external-node": "true",
            "external-source": "capsync",
            "capsync-owner": consul.owner,
        },
        "Service": {
            "ID": "python-worker-1",
            "Service": consul.service,
            "Meta": {"capsync-owner": "someone-else"},
        },
    }
    assert consul.put("/v1/catalog/register", squatter).status_code == 200
    before = consul.services()["python-worker-1"]
    result = sync(consul, "--source", f"file:{EXAMPLES}", "--allow-mass-delete")
    assert result.returncode == 0, result.stderr
    assert "event=conflict id=python-worker-1" in result.stderr
    after = consul.services()["python-worker-1"]
    # The node's meta gains this host as the service's writer; the instance is untouched.
    assert after.pop("NodeMeta").items() > before.pop("NodeMeta").items()
    assert after == before


def test_node_of_a_real_agent_is_refused(consul: ConsulTarget):
    agent_node = {"Node": consul.node, "Address": "10.1.1.1", "Service": {"Service": "web"}}
    assert consul.put("/v1/catalog/register", agent_node).status_code == 200
    result = sync(consul, "--source", f"file:{EXAMPLES}")
    assert result.returncode == 1
    assert "is not capsync's node" in result.stderr and "Traceback" not in result.stderr
    assert [s for s in consul.services()] == []


def test_refused_entry_reported_others_land(consul: ConsulTarget):
    needs_double(consul)
    good = [
        codec.encode(
            schema.validate({"id": f"ok-{i}"}, ref="t"),
            codec.Provenance(service="worker", owner=consul.owner, source="file", ref=f"r{i}"),
        )
        for i in range(9)
    ]
    # Bypasses validation on purpose: Consul refuses a meta key with a space.
    bad = codec.Entry("bad-1", "worker", (), {**good[0].meta, "bad key": "x"})
    registry = ConsulRegistry(
        ConsulClient(ConsulEndpoint(consul.address)),
        Ownership(service="worker", owner=consul.owner, node=consul.node),
    )
    registry.snapshot()
    result = registry.apply(Changes(create=(*good[:4], bad, *good[4:])))
    registry.close()
    assert [r.id for r in result.refused] == ["bad-1"]
    # Judged by Consul's meta rules before sending: the rule named, nothing sent for it.
    assert "meta key 'bad key': Consul meta keys are [A-Za-z0-9_-]" in result.refused[0].reason
    assert result.written == {"create": 9} and result.requests == 1  # 9 services land
    assert sorted(consul.services()) == sorted(e.id for e in good)


def test_batches_respect_the_txn_limit(tmp_path: Path):
    write_fleet(tmp_path / "fleet", 300)
    with ConsulDouble(max_txn_ops=128) as double:
        target = ConsulTarget(double.address, double)
        small = sync(target, "--source", f"file:{tmp_path / 'fleet'}")
        assert small.returncode == 0, small.stderr
        # Two ops an entry (its service and its check); the first transaction also
        # carries the node's registration, the later ones only entries.
        first = (64 - 1) // 2
        assert double.count("PUT", "/v1/txn") == 1 + math.ceil((300 - first) / (64 // 2))


def test_find_with_quotes_in_values(consul: ConsulTarget, tmp_path: Path):
    # go-bexpr strings have no escapes: a value with a double quote goes in backticks.
    (tmp_path / "q.json").write_text(
        '{"id": "quoted", "metadata": {"note": "say \\"hi\\""},'
        ' "fuzzing_tools": [{"tool_name": "a\\"b"}]}'
    )
    assert sync(consul, "--source", f"file:{tmp_path}").returncode == 0
    found = run_cli(
        "find",
        "--owner",
        consul.owner,
        "--meta",
        'note=say "hi"',
        "--has",
        'a"b',
        "--json",
        env=consul.env(),
    )
    assert found.returncode == 0, found.stderr
    assert [item["id"] for item in json.loads(found.stdout)] == ["quoted"]


def test_registry_down_is_one_clear_line():
    result = run_cli(
        "run", "--once", "--source", f"file:{EXAMPLES}", env={"CONSUL_HTTP_ADDR": "127.0.0.1:1"}
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "cannot reach Consul at http://127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr


def test_acl_token_from_env_and_file_never_printed(tmp_path: Path):
    secret = "s3cr3t-0000-token"
    with ConsulDouble(acl_token=secret) as double:
        target = ConsulTarget(double.address, double)
        denied = sync(target, "--source", f"file:{EXAMPLES}")
        assert denied.returncode == 1 and denied.stderr.count("\n") == 1
        assert "Permission denied: anonymous token lacks permission" in denied.stderr
        ok = sync(target, "--source", f"file:{EXAMPLES}", env={"CONSUL_HTTP_TOKEN": secret})
        assert ok.returncode == 0, ok.stderr
        token_file = tmp_path / "token"
        token_file.write_text(secret + "\n")
        again = sync(
            target, "--source", f"file:{EXAMPLES}", env={"CONSUL_HTTP_TOKEN_FILE": str(token_file)}
        )
        assert again.returncode == 0 and "9 unchanged" in again.stdout
        wrong = sync(
            target, "--source", f"file:{EXAMPLES}", env={"CONSUL_HTTP_TOKEN": "wrong-token"}
        )
        assert wrong.returncode == 1 and "ACL not found" in wrong.stderr
        for result in (denied, ok, again, wrong):
            assert secret not in result.stdout + result.stderr


def test_node_meta_written_by_another_writer_since_the_read_is_never_reverted(
    consul: ConsulTarget,
):
    """Two services of one owner share the node's meta (each its writer claim and guard
    marks): a write of the meta is a check-and-set on what was read, so a change made
    in between fails this registry's cycle, clearly, and survives; the next cycle reads
    it again and writes."""
    needs_double(consul)
    entry = codec.encode(
        schema.validate({"id": "w-1"}, ref="t"),
        codec.Provenance(service="worker", owner=consul.owner, source="file", ref="r"),
    )
    registry = ConsulRegistry(
        ConsulClient(ConsulEndpoint(consul.address)),
        Ownership(service="worker", owner=consul.owner, node=consul.node),
    )
    try:
        registry.snapshot()
        assert registry.apply(Changes(create=(entry,))).written == {"create": 1}
        registry.snapshot()
        node = consul.get(f"/v1/catalog/node/{consul.node}")["Node"]
        other = {**node["Meta"], "capsync-writer-other": "host-2"}  # another service's claim
        registered = consul.put(
            "/v1/catalog/register",
            {"Node": consul.node, "Address": node["Address"], "NodeMeta": other},
        )
        assert registered.status_code == 200
        marks = {"capsync-guard-worker": '{"owner": [1, 1]}'}
        with pytest.raises(RegistryError, match="changed since it was read"):
            registry.apply(Changes(delete=(entry,), record=marks))
        assert consul.get(f"/v1/catalog/node/{consul.node}")["Node"]["Meta"] == other
        assert "w-1" in consul.services()  # nothing of the batch was written
        registry.snapshot()
        assert registry.apply(Changes(delete=(entry,), record=marks)).written == {"delete": 1}
        meta = consul.get(f"/v1/catalog/node/{consul.node}")["Node"]["Meta"]
        assert meta["capsync-writer-other"] == "host-2" and meta["capsync-guard-worker"]
    finally:
        registry.close()


def test_an_owned_instance_changed_by_hand_between_steady_cycles_is_put_back(
    consul: ConsulTarget, tmp_path: Path
):
    """A steady cycle asks Consul only whether anything moved (its index) and reuses
    what it read; an instance of ours changed by hand (its tags) moves the index, so the
    next cycle reads it and writes it back as declared."""
    write_fleet(tmp_path / "fleet", 5)
    settings = SETTINGS.model_validate(
        {
            "registry": {"owner": consul.owner, "service": consul.service},
            "consul": {"address": consul.address},
            "sources": [{"type": "file", "path": str(tmp_path / "fleet")}],
        }
    )
    syncer = Syncer(build_sources(settings), build_registries(settings))
    try:
        assert syncer.run_once().registries[0].changes.writes == 5
        for _ in range(2):
            assert syncer.run_once().registries[0].changes.unchanged == 5
        declared = consul.services()["w-0001"]
        consul.retag_by_hand("w-0001", ["not-declared"])
        repaired = syncer.run_once().registries[0]
        assert [u.new.id for u in repaired.changes.update] == ["w-0001"]
        assert consul.services()["w-0001"]["ServiceTags"] == declared["ServiceTags"]
        assert syncer.run_once().registries[0].changes.unchanged == 5
    finally:
        for target in syncer.registries:
            target.registry.close()
