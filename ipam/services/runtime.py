"""The long-lived objects of one process, built once by ``ipam.app`` and shared by transports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ipam.metrics import Metrics
from ipam.services.allocation import Allocator
from ipam.services.placement import Placement
from ipam.services.placement_state import NodeDirectory, PoolCatalog, Promises, RecentPods
from ipam.services.pool_config import PoolConfigService
from ipam.settings import Settings
from ipam.storage.database import Database, head_revision


@dataclass(slots=True)
class Readiness:
    """Named conditions that must all hold before the service takes traffic."""

    conditions: dict[str, tuple[bool, str]] = field(default_factory=dict)

    def set(self, name: str, ok: bool, detail: str = "") -> None:
        self.conditions[name] = (ok, detail)


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
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, db: Database) -> Runtime:
        allocator = Allocator(db)
        catalog = PoolCatalog()
        allocator.listeners.append(catalog.on_change)
        nodes = NodeDirectory()
        promises = Promises(settings.promise_ttl_seconds)
        placement = Placement(db, allocator, catalog, nodes, promises, RecentPods())
        metrics = Metrics()
        allocator.listeners.append(metrics.on_address_change)
        return cls(settings=settings, db=db, allocator=allocator, pools=PoolConfigService(db),
                   catalog=catalog, nodes=nodes, promises=promises, placement=placement,
                   metrics=metrics)

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
