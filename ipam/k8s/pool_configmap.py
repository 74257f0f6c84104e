"""Watches galaxy's pool ConfigMap (``kube-system/floatingip-config``, key ``floatingips``)
so that ``kubectl apply -f floatingip-config.yaml`` takes effect without a restart.

Only the leader applies it (the import is idempotent and refuses to drop addresses in use, so
a bad edit is reported and changes nothing); every replica refreshes its pool catalog.
"""

from __future__ import annotations

import logging
from typing import Any

from ipam.engine.pool_config import parse_pool_config
from ipam.errors import IpamError
from ipam.services.allocation import Actor
from ipam.services.leadership import Leadership
from ipam.services.runtime import Runtime
from ipam.settings import PoolConfigMapSettings

log = logging.getLogger(__name__)


class PoolConfigMapController:
    def __init__(self, runtime: Runtime, settings: PoolConfigMapSettings,
                 leadership: Leadership | None) -> None:
        self.runtime = runtime
        self.settings = settings
        self.leadership = leadership
        self.applied_version: str | None = None
        self.last_error: str | None = None

    @staticmethod
    def reduce(obj: dict[str, Any]) -> dict[str, Any]:
        """Kept whole: the list is the one ConfigMap (a field selector on its name)."""
        return obj

    async def on_sync(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            await self.on_event("ADDED", item)

    async def on_event(self, etype: str, obj: dict[str, Any]) -> None:
        if etype == "DELETED" or obj.get("metadata", {}).get("name") != self.settings.name:
            return  # deleting the ConfigMap must not delete pools (or addresses)
        raw = (obj.get("data") or {}).get(self.settings.key)
        version = str(obj.get("metadata", {}).get("resourceVersion", ""))
        if raw is None or version == self.applied_version:
            return
        if self.leadership is not None and not await self.leadership.confirm():
            await self.runtime.catalog.refresh(self.runtime.db)
            return
        try:
            config = parse_pool_config(raw)
            diff = await self.runtime.pools.apply(
                config, actor=Actor(f"configmap:{self.settings.namespace}/{self.settings.name}"))
        except IpamError as exc:
            self.last_error = exc.message
            log.error("pool ConfigMap %s/%s (resourceVersion %s) not applied: %s",
                      self.settings.namespace, self.settings.name, version, exc.message)
            return
        # Filter must see the new pools before anyone is told the config is in effect.
        await self.runtime.catalog.refresh(self.runtime.db)
        self.applied_version, self.last_error = version, None
        if not diff.empty:
            log.info("pool ConfigMap applied: %s", diff.to_dict())
