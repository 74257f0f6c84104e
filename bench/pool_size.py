"""Section 4: allocation cost against pool size (/24, /16, /8, IPv6 /64), 10,000 taken each.

Timed here with the service's own ``Allocator`` on the same PostgreSQL: the HTTP and Binding
costs of a bind are the same for every pool and would only dilute the part that could depend
on pool size (the free-row lookup and the lazy materialisation of address rows).

* rounds: allocate ``k`` addresses (timed), release them (untimed), pools interleaved. A /24
  has 253 addresses, so it is filled to ``253 - k`` and every pool is compared on the same
  footing: a near-full index, the lowest free row first.
* streak: ``n`` fresh allocations in a row on the larger pools, crossing chunk boundaries
  (one 256-row insert per 256 allocations), to show that cost is flat from /16 to /64.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field

import asyncpg

from bench import workload
from bench.infra import fresh_database, migrate
from bench.lab import Lab
from bench.report import Section, Target
from bench.stats import Latency

RATIO_LIMIT = 1.5
POOLS = (("/24", "192.168.24.0/24"), ("/16", "172.16.0.0/16"), ("/8", "10.0.0.0/8"),
         ("IPv6 /64", "fd00:64::/64"))


@dataclass
class PoolRun:
    label: str
    subnet: str
    size: int = 0
    taken: int = 0
    rounds: list[float] = field(default_factory=list)
    streak: list[float] = field(default_factory=list)
    chunks: int = 0


async def seed_taken(conn: asyncpg.Connection, pool_id: int, first: int, version: int,
                     count: int) -> None:
    """``count`` allocated rows from the first address on, the high-water mark after them:
    the state 10,000 allocations leave behind (minus their audit rows)."""
    make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    addrs = [str(make(first + i)) for i in range(count)]
    await conn.execute(
        "INSERT INTO addresses (pool_id, address, state, owner_key, policy, pod_namespace,"
        " pod_name, pod_uid, node, allocated_at, updated_at)"
        " SELECT $1::int, a::inet, 'allocated', 'pod/seed/p' || $1::int || '-' || n,"
        " 'pod-delete', 'seed', 'p' || $1::int || '-' || n, 'seed-' || $1::int || '-' || n,"
        " 'node-00000', now(), now()"
        " FROM unnest($2::text[]) WITH ORDINALITY AS t(a, n)", pool_id, addrs)
    await conn.execute("UPDATE pools SET materialized_upto = $2::inet WHERE id = $1",
                       pool_id, addrs[-1])


async def run(lab: Lab) -> Section:
    from ipam.engine.pod import PodFacts
    from ipam.engine.pool_config import parse_pool_config
    from ipam.services.allocation import Actor, Allocator
    from ipam.services.pool_config import PoolConfigService
    from ipam.storage.database import Database

    sizes = lab.sizes
    k = sizes.poolsize_per_round
    runs = [PoolRun(label, subnet) for label, subnet in POOLS]
    actor = Actor("bench")
    section = Section("poolsize", "4. Allocation time against pool size", [
        "pool", "addresses", "taken before", "rounds n", "p50 ms", "p99 ms", "mean ms",
        "mean / /24", "streak n", "streak mean ms", "streak p99 ms", "chunk inserts"])
    async with fresh_database(lab.pg, "poolsize") as database:
        await migrate(lab.pg, database)
        db = Database(lab.pg.sqlalchemy_url(database), pool_size=2, max_overflow=0)
        try:
            config = parse_pool_config([
                workload.pool_entry(r.subnet, name=f"bench{r.label.split('/')[-1]}")
                for r in runs])
            await PoolConfigService(db).apply(config, actor=actor)
            async with db.transaction() as store:
                records = await store.pools.all()
            conn = await asyncpg.connect(**lab.pg.connect_kwargs(database))
            try:
                for r, rec in zip(runs, records, strict=True):
                    r.size = rec.size
                    r.taken = min(sizes.poolsize_taken, rec.size - k)
                    await seed_taken(conn, rec.id, rec.ranges[0].first, rec.family, r.taken)
                await conn.execute("VACUUM ANALYZE addresses")
            finally:
                await conn.close()
            allocator = Allocator(db)
            serial = 0

            async def allocate(rec: object, timed: list[float] | None) -> str:
                nonlocal serial
                serial += 1
                pod = PodFacts(namespace="bench", name=f"ps-{serial}", uid=f"ps-uid-{serial}",
                               eni_ip_count=1)
                start = time.perf_counter()
                got = await allocator.allocate(pod, [rec], node="node-00000",  # type: ignore[list-item]
                                               actor=actor)
                if timed is not None:
                    timed.append(time.perf_counter() - start)
                assert len(got) == 1
                return pod.uid

            for round_no in range(sizes.poolsize_rounds + 1):
                for r, rec in zip(runs, records, strict=True):
                    timed = r.rounds if round_no else None  # round 0 warms up
                    uids = [await allocate(rec, timed) for _ in range(k)]
                    for uid in uids:
                        await allocator.release_pod(uid, keep=False, actor=actor,
                                                    reason="bench")
            for r, rec in zip(runs[1:], records[1:], strict=True):
                async with db.transaction() as store:
                    before = await store.pools.lock_high_water(rec.id)
                for _ in range(sizes.poolsize_streak):
                    await allocate(rec, r.streak)
                async with db.transaction() as store:
                    after = await store.pools.lock_high_water(rec.id)
                assert before[1] is not None and after[1] is not None
                r.chunks = (int(after[1]) - int(before[1])) // 256
        finally:
            await db.dispose()
    base = Latency.of(runs[0].rounds)
    stats: dict[str, Latency] = {}
    for r in runs:
        lat = Latency.of(r.rounds)
        stats[r.label] = lat
        streak = Latency.of(r.streak) if r.streak else None
        section.rows.append([r.label, r.size, r.taken, lat.n, lat.p50, lat.p99, lat.mean,
                             lat.mean / base.mean, streak.n if streak else "-",
                             streak.mean if streak else float("nan"),
                             streak.p99 if streak else float("nan"),
                             r.chunks if streak else "-"])
        section.figures[r.label] = {"addresses": r.size, "taken": r.taken,
                                    "rounds": lat.to_dict(),
                                    "streak": streak.to_dict() if streak else None,
                                    "chunk_inserts": r.chunks}
    v6 = stats["IPv6 /64"]
    section.targets.append(Target("allocation mean, /64 vs /24", v6.mean / base.mean,
                                  RATIO_LIMIT, "x"))
    streak16 = Latency.of(runs[1].streak)
    streak64 = Latency.of(runs[3].streak)
    section.targets.append(Target("streak mean incl. chunk inserts, /64 vs /16",
                                  streak64.mean / streak16.mean, RATIO_LIMIT, "x"))
    section.notes.append(
        f"/24: {runs[0].size} addresses, so {runs[0].taken} taken (all but {k}), not 10,000. "
        f"Rounds: {sizes.poolsize_rounds} x {k} allocations per pool, each released "
        "(untimed) before the next round; one untimed warm-up round.")
    return section
