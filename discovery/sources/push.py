"""The push source: the live registrations in the inbox that workers pushed over the
daemon's front ends (REST, WebSocket, ...). Its place in the sources list is its
precedence, like any other source.

An expired lease is not listed, so its entry is deleted through the plan and the
deletion guard: a daemon that was down longer than the leases holds those deletions and
reports them instead of emptying the registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from config.settings import SourceName, SourceSettingsBase
from discovery.inbox import PURGE_AFTER, Inbox, SqliteInbox
from discovery.inbox_consul import ConsulInbox
from discovery.kinds import BuildContext, Kind, field_arg
from discovery.sources.base import Declaration, Listing


@dataclass
class PushSource:
    inbox: Inbox
    name: str = "push"
    clock: Callable[[], float] = field(default=time.time, repr=False)

    def list(self) -> Listing:
        now = self.clock()
        registrations = self.inbox.all()
        if any(r.expires is not None and r.expires < now - PURGE_AFTER
               for r in registrations):
            self.inbox.purge(now - PURGE_AFTER)
        return Listing([
            Declaration(source=self.name, ref=f"{r.via}/{r.id}", data=r.body,
                        fingerprint=repr(sorted(r.body.items())))
            for r in registrations if r.live(now)
        ])

    def close(self) -> None:
        self.inbox.close()


class PushSourceSettings(SourceSettingsBase):
    """Registrations pushed to the daemon's front ends. ``store``: ``sqlite`` (``path``,
    in the state directory), ``consul`` (Consul KV under ``kv_prefix``, so that every
    daemon accepts registrations and the leader syncs them), or ``auto``: Consul KV when
    leader election is on, else SQLite."""

    type: Literal["push"]
    name: SourceName = "push"
    store: Literal["auto", "sqlite", "consul"] = "auto"
    path: Path = Path("/var/lib/capsync/inbox.db")
    kv_prefix: str = "capsync/inbox"


def build(settings: PushSourceSettings, ctx: BuildContext) -> PushSource:
    consul = settings.store == "consul" or (settings.store == "auto" and ctx.leader_election)
    inbox: Inbox = (ConsulInbox(ctx.consul_endpoint(), settings.kv_prefix) if consul
                    else SqliteInbox(settings.path))
    return PushSource(inbox, name=settings.name)


KIND = Kind("push", PushSourceSettings, "[PATH]", field_arg("path", required=False), build)
