"""The live watch of the registry, ``/workers/watch`` (WebSocket), fed by the event bus.

Messages, one JSON object each::

    {"type": "snapshot", "stream": S, "sequence": N, "entries": [ENTRY...]}
    {"type": "resume", "stream": S, "sequence": N}          (instead of the snapshot)
    {"type": "event", "sequence": N, "action": "created|updated|deleted|health|withdrawn",
     "registry": R, "id": ID, "source": ..., "ref": ..., "owner": ..., "declaration": {...},
     "health": {"status": "passing|warning|critical", "output": "..."}}
    {"type": "dropped", "reason": "..."}                     (then the connection closes)

A client resumes with ``?stream=S&since=N`` (its last sequence number); when that part of
the history is gone (or the daemon restarted: another stream), it gets a fresh snapshot.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, WebSocket
from starlette.websockets import WebSocketDisconnect

from daemon.events import Start, describe
from daemon.registrar import RegistrationContext

WS_TRY_LATER = 1013
WS_POLICY = 1008  # a query that does not make sense


def start_messages(start: Start) -> list[dict[str, Any]]:
    if start.snapshot:
        entries = [
            {"registry": registry, "id": worker_id, **describe(entry)}
            for registry, view in start.entries.items()
            for worker_id, entry in sorted(view.items())
        ]
        head = {
            "type": "snapshot",
            "stream": start.stream,
            "sequence": start.sequence,
            "entries": entries,
        }
    else:
        head = {"type": "resume", "stream": start.stream, "sequence": start.sequence}
    return [head, *({"type": "event", **e.as_json()} for e in start.events)]


def add_routes(app: FastAPI, ctx: RegistrationContext) -> None:
    watchers: set[int] = set()

    @app.websocket("/workers/watch")
    async def watch(websocket: WebSocket) -> None:
        """A snapshot of every registry's entries, then one event per change."""
        await websocket.accept()  # accepted, to say why a query is refused (not a 403)
        stream = websocket.query_params.get("stream")
        since_text = websocket.query_params.get("since")
        since = int(since_text) if since_text and since_text.isdigit() else None
        if since_text is not None and since is None:
            await websocket.close(
                WS_POLICY,
                f"query parameter 'since' {since_text[:40]!r}: expected a sequence number",
            )
            return
        if len(watchers) >= ctx.settings.max_watchers:  # accepted, to say why
            await websocket.close(WS_TRY_LATER, "too many watchers")
            return
        watchers.add(id(websocket))
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()

        def wakeup() -> None:
            loop.call_soon_threadsafe(arrived.set)

        start, subscription = ctx.bus.subscribe(since, stream=stream, wakeup=wakeup)
        closed = asyncio.create_task(_closed(websocket))
        try:
            for message in start_messages(start):
                await websocket.send_json(message)
            while not closed.done():
                waiter = asyncio.create_task(arrived.wait())
                await asyncio.wait({waiter, closed}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                arrived.clear()
                for event in subscription.drain():
                    await websocket.send_json({"type": "event", **event.as_json()})
                if subscription.dropped:
                    await websocket.send_json({"type": "dropped", "reason": subscription.dropped})
                    await websocket.close(WS_TRY_LATER, "slow subscriber")
                    break
        except WebSocketDisconnect:
            pass
        finally:
            subscription.close()
            closed.cancel()
            watchers.discard(id(websocket))


async def _closed(websocket: WebSocket) -> None:
    """Returns when the client goes away (what it sends is ignored)."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass
