"""Usage per pool, per range and per VLAN (the operators' pool list and usage pages)."""

from __future__ import annotations

from dataclasses import dataclass

from ipam.services.pool_config import PoolUsage
from ipam.services.use_case import RuntimeUseCase
from ipam.storage.address_query import AddressQuery


@dataclass(frozen=True, slots=True)
class Counts:
    total: int
    allocated: int = 0
    kept: int = 0
    reserved: int = 0
    quarantined: int = 0

    @property
    def used(self) -> int:
        return self.allocated + self.kept + self.reserved + self.quarantined

    @property
    def free(self) -> int:
        return self.total - self.used

    @classmethod
    def of(cls, total: int, states: dict[str, int]) -> Counts:
        return cls(total, states.get("allocated", 0), states.get("kept", 0),
                   states.get("reserved", 0), states.get("quarantined", 0))

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.total + other.total, self.allocated + other.allocated,
                      self.kept + other.kept, self.reserved + other.reserved,
                      self.quarantined + other.quarantined)


@dataclass(frozen=True, slots=True)
class PoolDetail:
    usage: PoolUsage
    ranges: list[tuple[str, Counts]]


@dataclass(frozen=True, slots=True)
class VlanUsage:
    vlan: int | None
    pools: list[str]
    counts: Counts


@dataclass(frozen=True, slots=True)
class UsageReport:
    pools: list[PoolDetail]
    vlans: list[VlanUsage]


class PoolUsageReads(RuntimeUseCase):
    """Usage counts, read in one transaction so pools, states and ranges agree."""

    async def pool_usage_detail(self) -> UsageReport:
        async with self.db.transaction() as store:
            pools = await store.pools.all()
            counts = await store.addresses.taken_counts()
            per_range = await AddressQuery(store.sql).range_counts()
        details = []
        vlans: dict[int | None, VlanUsage] = {}
        for pool in pools:
            states = counts.get(pool.id, {})
            usage = PoolUsage(pool, states.get("allocated", 0), states.get("kept", 0),
                              states.get("reserved", 0), states.get("quarantined", 0))
            ranges = [(str(r), Counts.of(r.size, per_range.get((pool.id, r.first), {})))
                      for r in pool.ranges]
            details.append(PoolDetail(usage, ranges))
            mine = Counts.of(pool.size, states)
            seen = vlans.get(pool.vlan)
            vlans[pool.vlan] = (VlanUsage(pool.vlan, [pool.name], mine) if seen is None else
                                VlanUsage(pool.vlan, [*seen.pools, pool.name], seen.counts + mine))
        order = sorted(vlans, key=lambda v: (v is None, v if v is not None else 0))
        return UsageReport(details, [vlans[v] for v in order])
