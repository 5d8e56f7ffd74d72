"""A running daemon with the push source, the API token and the gRPC listener on, and
real gRPC clients for it through the committed generated stubs."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import grpc
from grpc_tools import protoc

from discovery.proto import registry_pb2_grpc as pb_grpc
from tests.consul_target import ConsulTarget
from tests.push_daemon import TOKEN, PushDaemon


class GrpcDaemon(PushDaemon):
    def __init__(
        self,
        target: ConsulTarget,
        state: Path,
        *args: str,
        env: dict[str, str] | None = None,
        token: str | None = TOKEN,
    ) -> None:
        super().__init__(
            target,
            state,
            *args,
            token=token,
            env={"CAPSYNC_GRPC__LISTEN": "127.0.0.1:0", **(env or {})},
        )
        self.grpc_address = ""
        self._channels: list[grpc.Channel] = []

    def started(self, timeout: float = 20) -> GrpcDaemon:
        super().started(timeout)
        line = self.wait_for(lambda line: "event=started" in line)
        self.grpc_address = line.split("grpc=", 1)[1].split()[0].strip('"')
        return self

    def channel(self) -> grpc.Channel:
        channel = grpc.insecure_channel(self.grpc_address)
        self._channels.append(channel)
        return channel

    def stub(self) -> pb_grpc.WorkerRegistryStub:
        return pb_grpc.WorkerRegistryStub(self.channel())

    def metadata(self, token: str | None = None) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {token or self.token}")]

    def stop(self, timeout: float = 10) -> int:
        for channel in self._channels:
            channel.close()
        return super().stop(timeout)


def call_error(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    """The RpcError a call ends with (AssertionError when it succeeds)."""
    try:
        call(*args, **kwargs)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError("the call succeeded")


def generated_client(directory: Path, script: str) -> Path:
    """A client program of its own in ``directory``: stubs a user generates from the
    shipped .proto (not the committed Python code), and ``script`` as client.py."""
    directory.mkdir()
    shipped = resources.files("discovery.proto") / "registry.proto"
    (directory / "registry.proto").write_text(shipped.read_text())
    args = [f"-I{directory}", f"--python_out={directory}", f"--grpc_python_out={directory}"]
    assert protoc.main(["protoc", *args, "registry.proto"]) == 0
    (directory / "client.py").write_text(script)
    return directory


def run_client(directory: Path, *args: str, timeout: float = 60) -> Any:
    """Run the generated client with ``args``; what it printed, as JSON."""
    out = subprocess.run(
        [sys.executable, "client.py", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)
