"""Keeps the node directory (name -> InternalIP) that nodeCacheCapable filter relies on."""

from __future__ import annotations

from typing import Any

from ipam.engine.ip_ranges import IPAddress
from ipam.engine.node import internal_ip, node_name
from ipam.services.placement_state import NodeDirectory

NodeEntry = tuple[str, IPAddress | None]


class NodeController:
    def __init__(self, directory: NodeDirectory) -> None:
        self.directory = directory

    @staticmethod
    def reduce(obj: dict[str, Any]) -> NodeEntry | None:
        """All the directory keeps of a listed node (a realistic one is ~4 KB of JSON)."""
        name = node_name(obj)
        return None if name is None else (name, internal_ip(obj))

    async def on_sync(self, entries: list[NodeEntry]) -> None:
        self.directory.replace(entries)

    async def on_event(self, etype: str, obj: dict[str, Any]) -> None:
        name = node_name(obj)
        if name is None:
            return
        if etype == "DELETED":
            self.directory.remove(name)
        else:
            self.directory.set(name, internal_ip(obj))
