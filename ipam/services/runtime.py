"""The long-lived objects of one process, built once by ``ipam.app`` and shared by transports.

``Runtime`` is the composition root: every long-lived object is a typed field. The
Kubernetes side (``ipam.k8s.controllers``) is built after it, when the service starts, and
fills the optional fields (``controllers``, ``reconciler``, ``leadership``, ``pod_watcher``)
in one place; they stay ``None`` without Kubernetes or with the controllers off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ipam.engine.pod import PodFacts
from ipam.metrics import Metric, Metrics, counter, gauge
from ipam.services.allocation import Allocator
from ipam.services.leadership import Leadership
from ipam.services.placement import Placement
from ipam.services.placement_state import (
    DirectoryGetter,
    NodeDirectory,
    PodDirectory,
    PodVisibility,
    PoolCatalog,
    Promises,
    RecentPods,
)
from ipam.services.pool_config import PoolConfigService, PoolUsage
from ipam.services.reconciler import Reconciler
from ipam.settings import Settings
from ipam.storage.change_feed import ChangeFeed, address_delta
from ipam.storage.database import Database, head_revision
from ipam.storage.records import AddressRecord

log = logging.getLogger(__name__)


def watcher_visibility(directory: DirectoryGetter) -> PodVisibility:
    """Promise visibility from the pod watcher's cache: the pod must be there, with this UID,
    and not bound yet. ``None`` while no watcher runs (controllers off, no Kubernetes)."""

    def visible(pod: PodFacts) -> bool | None:
        pods = directory()
        if pods is None:
            return None
        seen = pods.lookup(pod.namespace, pod.name)
        return seen is not None and seen.uid == pod.uid and seen.node_name is None

    return visible


@dataclass(slots=True)
class Readiness:
    """Named conditions that must all hold before the service takes traffic."""

    conditions: dict[str, tuple[bool, str]] = field(default_factory=dict)

    def set(self, name: str, ok: bool, detail: str = "") -> None:
        self.conditions[name] = (ok, detail)


class Background(Protocol):
    """The process's controllers (``ipam.k8s.controllers.Controllers``) as the runtime sees
    them: their gauges and counters, read at scrape time."""

    def collect(self) -> list[Metric]: ...


@dataclass(slots=True)
class Runtime:
    settings: Settings
    db: Database
    allocator: Allocator
    pools: PoolConfigService
    catalog: PoolCatalog
    nodes: NodeDirectory
    promises: Promises
    placement: Placement
    metrics: Metrics = field(default_factory=Metrics)
    readiness: Readiness = field(default_factory=Readiness)
    #: The Kubernetes side, set when the controllers start (``None`` until then, and
    #: without Kubernetes or with the controllers off).
    controllers: Background | None = None
    reconciler: Reconciler | None = None
    leadership: Leadership | None = None
    #: The pod watcher's cache (promises and the CNI's pod lookups read it).
    pod_watcher: PodDirectory | None = None
    #: Pool usage as of the last ``/metrics`` scrape, for the controllers' gauges.
    usage: list[PoolUsage] = field(default_factory=list)
    #: Other replicas' (and writers') changes to pool usage; ``start()`` turns it on.
    feed: ChangeFeed | None = None
    _pending_refresh: asyncio.Task[None] | None = None
    _refresh_wanted: bool = False

    @classmethod
    def build(cls, settings: Settings, db: Database) -> Runtime:
        allocator = Allocator(db, quarantine_seconds=settings.quarantine_seconds)
        catalog = PoolCatalog()
        db.listeners.append(catalog.on_change)
        nodes = NodeDirectory()
        built: list[Runtime] = []

        def pod_watcher() -> PodDirectory | None:
            """Built later, by the controllers (``None`` until then)."""
            return built[0].pod_watcher if built else None

        promises = Promises(settings.promise_ttl_seconds,
                            namespace_cap=settings.promise_namespace_cap,
                            visible=watcher_visibility(pod_watcher))
        placement = Placement(db, allocator, catalog, nodes, promises,
                              RecentPods(directory=pod_watcher))
        metrics = Metrics()
        db.listeners.append(metrics.on_address_change)
        runtime = cls(settings=settings, db=db, allocator=allocator,
                      pools=PoolConfigService(db), catalog=catalog, nodes=nodes,
                      promises=promises, placement=placement, metrics=metrics)
        built.append(runtime)
        feed = ChangeFeed(db, on_deltas=catalog.apply, on_pools=runtime.refresh_soon,
                          on_connected=lambda: catalog.refresh(db),
                          backoff_seconds=settings.watch.backoff_seconds)
        runtime.feed = feed

        def publish(before: AddressRecord | None, after: AddressRecord | None) -> None:
            delta = address_delta(before, after)
            if delta is not None:
                feed.publish(delta)

        db.listeners.append(publish)
        metrics.add_state(runtime._collect)
        metrics.add_state(runtime._collect_controllers)
        return runtime

    def start(self) -> None:
        """Background work that belongs to the runtime itself (the change feed); the service's
        lifespan calls it, one-shot commands (``ipam check``) do not."""
        if self.feed is not None:
            self.feed.start()

    async def stop(self) -> None:
        if self._pending_refresh is not None:
            self._pending_refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pending_refresh
        if self.feed is not None:
            await self.feed.stop()

    def refresh_soon(self) -> None:
        """Pools changed somewhere: re-read them, in one task; asked again while it reads,
        it reads once more."""
        self._refresh_wanted = True
        if self._pending_refresh is None or self._pending_refresh.done():
            self._pending_refresh = asyncio.create_task(self._refresh(), name="pools-reread")

    async def _refresh(self) -> None:
        while self._refresh_wanted:
            self._refresh_wanted = False
            try:
                await self.catalog.refresh(self.db)
            except Exception as exc:
                log.warning("re-reading pools after a change elsewhere failed: %s (the "
                            "periodic refresh retries)", exc)
                return
            if self.feed is not None:
                self.feed.signal()

    def _collect_controllers(self) -> Iterable[Metric]:
        """The running controllers' metrics (whichever started last on this runtime)."""
        if self.controllers is not None:
            yield from self.controllers.collect()

    def _collect(self) -> Iterable[Metric]:
        yield counter("ipam_filter_promises_refused", "Filter promises not granted, by reason "
                      "(unknown_pod: not seen by the pod watcher; namespace_cap).", ["reason"],
                      (([r], float(n)) for r, n in self.promises.refused.items()))
        if self.feed is not None:
            stats = self.feed.stats
            yield gauge("ipam_change_feed_up", "1 while other replicas' pool usage changes "
                        "arrive as they commit (LISTEN connection up).", [],
                        [([], float(self.feed.up))])
            yield counter("ipam_change_feed_connects", "Change feed (re)connections.", [],
                          [([], float(stats["connects"]))])
            yield counter("ipam_change_feed_errors", "Change feed connection failures.", [],
                          [([], float(stats["errors"]))])
            yield counter("ipam_change_feed_notifications", "Notifications received, by what "
                          "was done (applied, own: ours, skipped; malformed).", ["result"],
                          (([k], float(stats[k])) for k in ("applied", "own", "malformed")))

    async def health_checks(self) -> dict[str, dict[str, Any]]:
        checks: dict[str, dict[str, Any]] = {}
        reachable = await self.db.ping()
        checks["database"] = {"ok": reachable, "detail": "" if reachable else "unreachable"}
        if reachable:
            try:
                current, head = await self.db.schema_revision(), head_revision()
                checks["migrations"] = {"ok": current == head,
                                        "detail": f"at {current}, head {head}"}
            except Exception as exc:
                checks["migrations"] = {"ok": False, "detail": type(exc).__name__}
        for name, (ok, detail) in self.readiness.conditions.items():
            checks[name] = {"ok": ok, "detail": detail}
        return checks
