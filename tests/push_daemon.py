"""A running daemon with the push source and an API token, and real HTTP and WebSocket
clients for it (requests, websockets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests
from websockets.sync.client import ClientConnection, connect

from tests.consul_target import ConsulTarget
from tests.daemon_process import Daemon

TOKEN = "api-tok-9f8e7d6c5b4a"


class PushDaemon(Daemon):
    def __init__(
        self,
        target: ConsulTarget,
        state: Path,
        *args: str,
        env: dict[str, str] | None = None,
        token: str | None = TOKEN,
    ) -> None:
        extra = dict(env or {})
        if token is not None:
            token_file = state / "api-token"
            token_file.write_text(token + "\n")
            extra["CAPSYNC_API__TOKEN_FILE"] = str(token_file)
        super().__init__(
            [
                "--owner",
                target.owner,
                "--service",
                target.service,
                "--source",
                f"push:{state / 'inbox.db'}",
                "--interval",
                "300s",
                *args,
            ],
            env=target.env(**extra),
        )
        self.token = token

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    def post(
        self, path: str, body: Any, *, token: str | None = None, **params: Any
    ) -> requests.Response:
        return requests.post(
            f"http://{self.address}{path}",
            json=body,
            params=params,
            headers=self.auth(token),
            timeout=10,
        )

    def register(self, body: Any, **params: Any) -> requests.Response:
        return self.post("/workers/register", body, **params)

    def delete(self, worker_id: str, *, token: str | None = None) -> requests.Response:
        return requests.delete(
            f"http://{self.address}/workers/{worker_id}", headers=self.auth(token), timeout=10
        )

    def websocket(self, path: str = "/workers/ws", token: str | None = None) -> ClientConnection:
        headers = self.auth(token) if self.token else {}
        return connect(f"ws://{self.address}{path}", additional_headers=headers, open_timeout=10)


def send(ws: ClientConnection, message: Any) -> dict[str, Any]:
    ws.send(message if isinstance(message, str) else json.dumps(message))
    answer: dict[str, Any] = json.loads(ws.recv(timeout=10))
    return answer
