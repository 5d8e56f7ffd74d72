"""Whose entries a registry writes: one value, built once per configured registry and
handed to the registry, its store claim and its writer claim (daemon/registry/writer.py)."""

from __future__ import annotations

from dataclasses import dataclass

from config.settings import RegistrySettingsBase


@dataclass(frozen=True)
class Ownership:
    """``service`` and ``owner`` mark the entries as this capsync's; ``node`` is the
    owner's node, whose meta records ``writer`` (this host; the owner when empty) as the
    one writer of the service; ``takeover``: leader election serialises the writers, so
    the leader takes the node over from a writer recorded before it."""

    service: str
    owner: str
    node: str = ""  # empty: capsync-<owner>
    writer: str = ""  # empty: the owner
    takeover: bool = False
    name: str = ""  # the registry's configured name, which its log lines carry

    def __post_init__(self) -> None:
        object.__setattr__(self, "node", self.node or f"capsync-{self.owner}")
        object.__setattr__(self, "writer", self.writer or self.owner)

    @classmethod
    def of(cls, settings: RegistrySettingsBase, *, takeover: bool) -> Ownership:
        """The ownership a registry's settings name."""
        return cls(
            settings.service,
            settings.owner,
            settings.node_name,
            settings.writer,
            takeover,
            settings.name,
        )

    def foreign_owner(self, owner: str) -> str:
        """Why an entry to write carrying ``owner`` is refused (empty: it is not)."""
        if owner == self.owner:
            return ""
        return f"entry carries capsync-owner {owner!r}; this registry is {self.owner!r}"

    def node_of(self, owner: str) -> str:
        """The node an entry of ``owner`` is listed under, in a store that keeps no
        nodes: this owner's node, or the default node of another owner."""
        return self.node if owner == self.owner else f"capsync-{owner}"

    def ours(self, owner: str, service: str) -> bool:
        """Is an entry with this owner and service this capsync's to write?"""
        return owner == self.owner and service.lower() == self.service.lower()
