"""Keeps the node directory (name -> InternalIP) that nodeCacheCapable filter relies on."""

from __future__ import annotations

from typing import Any

from ipam.engine.node import internal_ip, node_name
from ipam.services.placement_state import NodeDirectory


class NodeController:
    def __init__(self, directory: NodeDirectory) -> None:
        self.directory = directory

    async def on_sync(self, items: list[dict[str, Any]]) -> None:
        entries = [(name, internal_ip(item)) for item in items
                   if (name := node_name(item)) is not None]
        self.directory.replace(entries)

    async def on_event(self, etype: str, obj: dict[str, Any]) -> None:
        name = node_name(obj)
        if name is None:
            return
        if etype == "DELETED":
            self.directory.remove(name)
        else:
            self.directory.set(name, internal_ip(obj))
