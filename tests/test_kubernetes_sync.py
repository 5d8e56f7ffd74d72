"""The kubernetes source end to end: the CLI and the daemon, the Kubernetes double as the
API server (through the real client), the Consul double as the registry."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import SEED_CRD_SPEC, SEED_LABEL, run_cli
from tests.consul_target import ConsulTarget
from tests.daemon_process import Daemon, wait_until
from tests.doubles.kubernetes import KubernetesDouble


def test_pods_and_resources_appear_with_their_ids(consul: ConsulTarget, tmp_path: Path):
    with KubernetesDouble() as kube:
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
        kube.put_pod(
            "ci", "rust-pod-7", annotations={"worker.capabilities": SEED_LABEL}, pod_ip="10.1.2.3"
        )
        kube.put_pod("ci", "no-id-pod", annotations={"worker.capabilities": "{}"})
        kube.put_pod("ci", "pending", annotations={"worker.capabilities": "{}"}, phase="Pending")
        kube.put_resource("ci", "rust-worker-1", SEED_CRD_SPEC)
        kube.put_resource("ci", "named-by-metadata", {"fuzzingTools": [{"toolName": "afl++"}]})
        kube.put_pod("ci", "broken", annotations={"worker.capabilities": '{"id": '})
        result = run_cli(
            "run",
            "--once",
            "--owner",
            consul.owner,
            "--source",
            "kubernetes",
            env=consul.env(KUBECONFIG=str(kubeconfig)),
        )
    assert result.returncode == 0, result.stderr
    services = consul.services()
    assert set(services) == {"rust-worker", "no-id-pod", "rust-worker-1", "named-by-metadata"}
    assert services["rust-worker"]["ServiceAddress"] == "10.1.2.3"
    assert services["rust-worker"]["ServiceMeta"]["capsync-ref"] == "ci/rust-pod-7"
    assert services["rust-worker-1"]["ServiceTags"] == [
        "cargo-audit",
        "cargo-fmt",
        "clippy",
        "rustfmt",
    ]
    assert "ref=ci/broken" in result.stderr and "malformed JSON" in result.stderr


def test_watch_event_triggers_a_sync(consul: ConsulTarget, tmp_path: Path):
    with KubernetesDouble() as kube:
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
        proc = Daemon(
            ["--owner", consul.owner, "--source", "kubernetes", "--interval", "300s"],
            env=consul.env(KUBECONFIG=str(kubeconfig)),
        ).started()
        try:
            proc.wait_for(lambda line: "event=cycle" in line)
            kube.put_resource(
                "ci", "late-worker", {"staticAnalysisTools": [{"toolName": "semgrep"}]}
            )
            wait_until(lambda: "late-worker" in consul.services(), 3, 0.05)
            kube.delete_resource("ci", "late-worker")
            wait_until(lambda: "late-worker" not in consul.services(), 3, 0.05)
        finally:
            assert proc.stop() == 0


def test_steady_cycles_of_the_daemon_read_the_cache_not_the_api(
    consul: ConsulTarget, tmp_path: Path
):
    with KubernetesDouble() as kube:
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
        config = tmp_path / "capsync.toml"
        config.write_text('[[sources]]\ntype = "kubernetes"\nlabel_selector = "role=worker"\n')
        declares = {"worker.capabilities": "{}"}
        kube.put_pod("ci", "cached-pod", annotations=declares, labels={"role": "worker"})
        proc = Daemon(
            ["--config", str(config), "--owner", consul.owner, "--interval", "1s"],
            env=consul.env(KUBECONFIG=str(kubeconfig)),
        ).started()

        def cycles() -> int:
            return sum("event=cycle" in line for line in proc.lines)

        def lists() -> int:
            return sum("watch=" not in path.lower() for _, path in list(kube.requests))

        try:
            wait_until(lambda: "cached-pod" in consul.services(), 10, 0.05)
            wait_until(lambda: sum("watch=true" in p for _, p in list(kube.requests)) >= 2)
            before, seen = lists(), cycles()
            wait_until(lambda: cycles() >= seen + 2, 10, 0.05)  # two interval cycles
            # Relabelled out of the selector: it leaves through the watch's DELETED event.
            kube.put_pod("ci", "cached-pod", annotations=declares, labels={"role": "retired"})
            wait_until(lambda: "cached-pod" not in consul.services(), 5, 0.05)
            assert lists() == before
        finally:
            assert proc.stop() == 0
