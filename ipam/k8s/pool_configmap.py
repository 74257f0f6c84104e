"""Watches galaxy's pool ConfigMap (``kube-system/floatingip-config``, key ``floatingips``)
so that ``kubectl apply -f floatingip-config.yaml`` takes effect without a restart.

The watch only records the latest ConfigMap (``on_event`` does no I/O and cannot fail, so the
watch never stalls on it or replays it); ``sync``, a supervised pass woken by every change
and by this replica's election, applies it on the leader. A change seen while following is
thus applied when elected, and a database outage is retried with backoff. Followers only
refresh their pool catalog.

A config that cannot be applied (invalid, would strand addresses in use, or anything
unexpected while reading it: a 5,000-digit ``vlan`` once raised from the JSON decoder) is
refused once per resourceVersion: logged, counted (``ipam_pool_configmap_refusals_total``)
and reported as a Warning Event on the ConfigMap. The import is one transaction, so the last
good config stays in effect; readiness is not touched.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ipam.engine.pool_config import parse_pool_config
from ipam.errors import ConfigError, IpamError, Unavailable
from ipam.k8s.events import EventRecorder
from ipam.services.allocation import Actor
from ipam.services.leadership import Leadership
from ipam.services.runtime import Runtime
from ipam.settings import PoolConfigMapSettings

log = logging.getLogger(__name__)

REFUSED_REASON = "PoolConfigRefused"


class PoolConfigMapController:
    def __init__(self, runtime: Runtime, settings: PoolConfigMapSettings,
                 leadership: Leadership | None, events: EventRecorder | None = None) -> None:
        self.runtime = runtime
        self.settings = settings
        self.leadership = leadership
        self.events = events
        #: The ConfigMap as last seen by the watch (``None``: none seen, or deleted).
        self.latest: dict[str, Any] | None = None
        #: Set by the watch and by election: ``sync`` has something to look at.
        self.changed = asyncio.Event()
        self.applied_version: str | None = None
        self.refused_version: str | None = None
        self.last_error: str | None = None
        #: Refusals by error code over the process lifetime (a metric).
        self.refusals: dict[str, int] = {}
        #: The version a follower last refreshed its catalog for (the leader applies it).
        self.refreshed_version: str | None = None

    @property
    def source(self) -> str:
        return f"{self.settings.namespace}/{self.settings.name}"

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
        self.latest = obj
        self.changed.set()

    async def on_elected(self) -> None:
        """A new leader applies what it saw while following."""
        self.changed.set()

    async def sync(self) -> None:
        """One pass: apply the latest ConfigMap if this replica leads and has not applied or
        refused that version yet. Raises only what retrying may cure (``Unavailable``)."""
        obj = self.latest
        if obj is None:
            return
        meta = obj.get("metadata") or {}
        version = str(meta.get("resourceVersion", ""))
        if version in (self.applied_version, self.refused_version):
            return
        if self.leadership is not None and not await self.leadership.confirm():
            if version != self.refreshed_version:  # the leader applies it: show its pools
                await self.runtime.catalog.refresh(self.runtime.db)
                self.refreshed_version = version
            return
        raw = (obj.get("data") or {}).get(self.settings.key)
        try:
            if not isinstance(raw, str):
                raise ConfigError(f"the ConfigMap has no data key {self.settings.key!r}")
            config = parse_pool_config(raw)
            diff = await self.runtime.pools.apply(config, actor=Actor(f"configmap:{self.source}"))
        except Unavailable:
            raise  # the database: the supervisor backs off and this version is tried again
        except IpamError as exc:
            await self._refuse(obj, version, exc.code, exc.message)
            return
        except Exception as exc:
            log.exception("pool ConfigMap %s (resourceVersion %s): unexpected error reading it",
                          self.source, version)
            await self._refuse(obj, version, "unexpected", f"{type(exc).__name__}: {exc}")
            return
        # Filter must see the new pools before anyone is told the config is in effect.
        await self.runtime.catalog.refresh(self.runtime.db)
        self.applied_version, self.refused_version, self.last_error = version, None, None
        if not diff.empty:
            log.info("pool ConfigMap %s applied: %s", self.source, diff.to_dict())

    async def _refuse(self, obj: dict[str, Any], version: str, code: str, message: str) -> None:
        self.refused_version, self.last_error = version, message
        self.refusals[code] = self.refusals.get(code, 0) + 1
        log.error("pool ConfigMap %s (resourceVersion %s) refused, the pools stay as they "
                  "were: %s", self.source, version, message)
        if self.events is not None:
            await self.events.warning(
                obj, kind="ConfigMap", api_version="v1", reason=REFUSED_REASON,
                message=f"not applied (resourceVersion {version}); ipam keeps the pools it "
                        f"had: {message}")
