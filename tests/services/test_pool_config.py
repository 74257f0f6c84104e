"""Applying pool config: idempotent, dry-run, and never dropping an address in use."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from ipam.engine.pool_config import PoolConfig, parse_pool_config
from ipam.errors import Conflict
from ipam.services.allocation import Actor, Allocator
from ipam.services.pool_config import PoolConfigService
from ipam.storage.database import Database
from tests.services.helpers import make_pod, routable, small_config


async def count(db: Database, sql: str) -> int:
    async with db.engine.connect() as conn:
        return int(await conn.scalar(text(sql)) or 0)


async def test_seed_import_is_idempotent(
    pool_service: PoolConfigService, seed_config: PoolConfig, db: Database, actor: Actor,
) -> None:
    first = await pool_service.apply(seed_config, actor=actor)
    assert first.added == ["10.11.128.0/21"] and not first.empty
    second = await pool_service.apply(seed_config, actor=actor)
    assert second.empty and second.added == [] and second.changed == {}
    assert await count(db, "SELECT count(*) FROM audit WHERE action = 'pools.import'") == 1
    (pool,) = await pool_service.current()
    assert (pool.size, pool.vlan, str(pool.gateway)) == (2045, 1200, "10.11.135.254")


async def test_dry_run_reports_and_changes_nothing(
    pool_service: PoolConfigService, seed_config: PoolConfig, db: Database, actor: Actor,
) -> None:
    diff = await pool_service.apply(seed_config, actor=actor, dry_run=True)
    assert diff.added == ["10.11.128.0/21"] and diff.dry_run
    assert await pool_service.current() == []
    assert await count(db, "SELECT count(*) FROM audit") == 0


async def test_shrinking_under_live_allocations_is_refused_and_lists_them(
    pool_service: PoolConfigService, allocator: Allocator, db: Database, actor: Actor,
) -> None:
    wide = parse_pool_config(small_config(
        ("10.10.100.0/24", "10.20.0.1~10.20.0.20", "10.20.0.0/24", 5)))
    await pool_service.apply(wide, actor=actor)
    pools = routable(await pool_service.current(), "10.10.100.1")
    recs = [(await allocator.allocate(make_pod(f"p{i}"), pools, node="n", actor=actor))[0]
            for i in range(3)]
    narrow = parse_pool_config(small_config(
        ("10.10.100.0/24", "10.20.0.2~10.20.0.20", "10.20.0.0/24", 5)))
    with pytest.raises(Conflict, match=r"1 address\(es\) in use .*10\.20\.0\.1 \(allocated"):
        await pool_service.apply(narrow, actor=actor)
    (pool,) = await pool_service.current()
    assert [str(r) for r in pool.ranges] == ["10.20.0.1~10.20.0.20"]
    assert await count(db, "SELECT count(*) FROM addresses WHERE state = 'allocated'") == 3
    assert str(recs[0].address) == "10.20.0.1"

    # Removing the whole entry is refused the same way.
    with pytest.raises(Conflict, match="in use"):
        await pool_service.apply(parse_pool_config([]), actor=actor)


async def test_shrinking_free_space_drops_only_free_rows(
    pool_service: PoolConfigService, allocator: Allocator, db: Database, actor: Actor,
) -> None:
    await pool_service.apply(parse_pool_config(small_config(
        ("10.10.100.0/24", "10.20.0.1~10.20.0.200", "10.20.0.0/24", None))), actor=actor)
    pools = routable(await pool_service.current(), "10.10.100.1")
    await allocator.allocate(make_pod("p"), pools, node="n", actor=actor)
    materialised = await count(db, "SELECT count(*) FROM addresses")
    assert materialised > 100
    diff = await pool_service.apply(parse_pool_config(small_config(
        ("10.10.100.0/24", "10.20.0.1~10.20.0.50", "10.20.0.0/24", None))), actor=actor)
    assert diff.dropped_free_rows == materialised - 50
    assert diff.changed["10.20.0.0/24"]["ips"] == {"from": ["10.20.0.1~10.20.0.200"],
                                                   "to": ["10.20.0.1~10.20.0.50"]}
    assert await count(db, "SELECT count(*) FROM addresses WHERE state = 'allocated'") == 1


async def test_range_moved_to_a_new_entry_keeps_its_allocations(
    pool_service: PoolConfigService, allocator: Allocator, db: Database, actor: Actor,
) -> None:
    await pool_service.apply(parse_pool_config([
        {"routableSubnet": "10.10.100.0/24", "ips": ["10.20.0.1~10.20.0.9"],
         "subnet": "10.20.0.0/24", "name": "old"}]), actor=actor)
    pools = routable(await pool_service.current(), "10.10.100.1")
    (rec,) = await allocator.allocate(make_pod("p"), pools, node="n", actor=actor)
    diff = await pool_service.apply(parse_pool_config([
        {"routableSubnet": "10.10.100.0/24", "ips": ["10.20.0.1~10.20.0.9"],
         "subnet": "10.20.0.0/24", "name": "new", "vlan": 9}]), actor=actor)
    assert (diff.added, diff.removed) == (["new"], ["old"])
    assert diff.moved_addresses == await count(db, "SELECT count(*) FROM addresses") == 9
    async with db.transaction() as store:
        moved = await store.addresses.by_address(rec.address)
    assert moved is not None and (moved.pool, moved.vlan, moved.state) == ("new", 9, "allocated")
