"""Allocation on real PostgreSQL: uniqueness under concurrency, exhaustion, owners, IPv6."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from sqlalchemy import text

from ipam.engine.pool_config import PoolConfig, parse_pool_config
from ipam.errors import Conflict, InvalidInput, PoolExhausted
from ipam.services.allocation import MATERIALIZE_CHUNK, Actor, Allocator, audit_entry
from ipam.services.pool_config import PoolConfigService
from ipam.storage.audit_repository import AuditFilter
from ipam.storage.database import Database
from tests.services.helpers import deployment_pod, make_pod, routable, small_config

NODE = "10.10.100.5"


async def pools_for(service: PoolConfigService, config: PoolConfig, node: str = NODE
                    ) -> list:
    await service.apply(config, actor=Actor("test"))
    return routable(await service.current(), node)


async def scalar(db: Database, sql: str) -> object:
    async with db.engine.connect() as conn:
        return await conn.scalar(text(sql))


async def test_first_allocation_is_lowest_address_with_audit_row(
    allocator: Allocator, pool_service: PoolConfigService, seed_config: PoolConfig,
    db: Database, actor: Actor,
) -> None:
    pools = await pools_for(pool_service, seed_config)
    pod = make_pod("a")
    (rec,) = await allocator.allocate(pod, pools, node="node-0", actor=actor)
    assert str(rec.address) == "10.11.128.1"
    assert (rec.prefix_length, str(rec.gateway), rec.vlan) == (21, "10.11.135.254", 1200)
    assert rec.state == "allocated" and rec.pod_uid == pod.uid
    async with db.engine.connect() as conn:
        row = (await conn.execute(text(
            "SELECT actor, action, host(address), pod_uid, request_id, after->>'state' "
            "FROM audit WHERE action = 'allocate'"))).one()
    assert tuple(row) == ("test", "allocate", "10.11.128.1", pod.uid, "req-test", "allocated")


async def test_retry_with_same_uid_allocates_nothing_new(
    allocator: Allocator, pool_service: PoolConfigService, seed_config: PoolConfig,
    db: Database, actor: Actor,
) -> None:
    pools = await pools_for(pool_service, seed_config)
    pod = make_pod("a")
    first = await allocator.allocate(pod, pools, node="node-0", actor=actor)
    again = await allocator.allocate(pod, pools, node="node-1", actor=actor)
    assert [r.address for r in again] == [r.address for r in first]
    assert await scalar(db, "SELECT count(*) FROM addresses WHERE state <> 'free'") == 1
    assert await scalar(db, "SELECT count(*) FROM audit WHERE action = 'allocate'") == 1


async def test_64_concurrent_allocations_never_share_an_address(
    allocator: Allocator, pool_service: PoolConfigService, db: Database, actor: Actor,
) -> None:
    config = parse_pool_config(small_config(
        ("10.10.100.0/24", "10.20.0.1~10.20.0.40", "10.20.0.0/24", 7)))
    pools = await pools_for(pool_service, config)
    pods = [make_pod(f"p{i}") for i in range(64)]
    results = await asyncio.gather(
        *(allocator.allocate(p, pools, node="n", actor=actor) for p in pods),
        return_exceptions=True)
    won = [r[0] for r in results if isinstance(r, list)]
    lost = [r for r in results if not isinstance(r, list)]
    assert len(won) == 40
    assert len({r.address for r in won}) == 40
    assert all(isinstance(e, PoolExhausted) for e in lost), lost
    assert all("10.20.0.0/24 exhausted" in e.message for e in lost)
    assert await scalar(db, "SELECT count(DISTINCT pod_uid) FROM addresses "
                            "WHERE state = 'allocated'") == 40
    assert await scalar(db, "SELECT count(*) FROM audit WHERE action = 'allocate'") == 40


async def test_two_engines_like_two_replicas_never_share_an_address(
    db_url: str, pool_service: PoolConfigService, actor: Actor,
) -> None:
    config = parse_pool_config(small_config(
        ("10.10.100.0/24", "10.20.0.1~10.20.0.60", "10.20.0.0/24", None)))
    pools = await pools_for(pool_service, config)
    replicas = [Database(db_url, pool_size=8, max_overflow=0) for _ in range(2)]
    try:
        allocators = [Allocator(d, chunk=16) for d in replicas]
        pods = [make_pod(f"p{i}") for i in range(100)]
        results = await asyncio.gather(
            *(allocators[i % 2].allocate(p, pools, node="n", actor=actor)
              for i, p in enumerate(pods)),
            return_exceptions=True)
    finally:
        for d in replicas:
            await d.dispose()
    won = [r[0].address for r in results if isinstance(r, list)]
    assert len(won) == 60 == len(set(won))
    assert all(isinstance(r, PoolExhausted) for r in results if not isinstance(r, list))


async def test_exhausted_range_falls_back_to_the_next_entry(
    allocator: Allocator, pool_service: PoolConfigService, actor: Actor,
) -> None:
    config = parse_pool_config(small_config(
        ("10.10.100.0/24", "10.20.0.1~10.20.0.2", "10.20.0.0/24", 100),
        ("10.10.100.0/24", "10.30.0.1~10.30.0.2", "10.30.0.0/24", 200),
    ))
    pools = await pools_for(pool_service, config)
    got = [(await allocator.allocate(make_pod(f"p{i}"), pools, node="n", actor=actor))[0]
           for i in range(4)]
    assert [(str(r.address), r.vlan) for r in got] == [
        ("10.20.0.1", 100), ("10.20.0.2", 100), ("10.30.0.1", 200), ("10.30.0.2", 200)]
    with pytest.raises(PoolExhausted, match=r"pools 10\.20\.0\.0/24, 10\.30\.0\.0/24 exhausted"):
        await allocator.allocate(make_pod("p5"), pools, node="n", actor=actor)


async def test_ipv6_slash_64_materialises_only_what_is_used(
    allocator: Allocator, pool_service: PoolConfigService, db: Database, actor: Actor,
) -> None:
    config = parse_pool_config([{
        "routableSubnet": "10.10.100.0/24", "subnet": "2001:db8:1::/64",
        "ips": ["2001:db8:1::1~2001:db8:1::ffff:ffff:ffff:ffff"],
    }])
    pools = await pools_for(pool_service, config)
    got = [(await allocator.allocate(make_pod(f"p{i}"), pools, node="n", actor=actor))[0]
           for i in range(300)]
    assert got[0].address == ipaddress.ip_address("2001:db8:1::1")
    assert got[-1].address == ipaddress.ip_address("2001:db8:1::12c")
    rows = await scalar(db, "SELECT count(*) FROM addresses")
    assert 300 <= rows <= 300 + MATERIALIZE_CHUNK  # type: ignore[operator]


async def test_request_ip_range_is_all_or_nothing(
    allocator: Allocator, pool_service: PoolConfigService, seed_config: PoolConfig,
    db: Database, actor: Actor,
) -> None:
    pools = await pools_for(pool_service, seed_config)
    args = '{"request_ip_range": [["10.11.128.5"], ["10.11.129.1~10.11.129.9"]]}'
    pod = make_pod("multi", annotations={"k8s.v1.cni.galaxy.io/args": args})
    recs = await allocator.allocate(pod, pools, node="n", actor=actor)
    assert [(str(r.address), r.slot) for r in recs] == [("10.11.128.5", 0), ("10.11.129.1", 1)]

    # 10.11.128.5 is taken now: a second pod asking for it gets nothing at all.
    other = make_pod("other", annotations={"k8s.v1.cni.galaxy.io/args":
                                           '{"request_ip_range": [["10.11.129.2"], '
                                           '["10.11.128.5"]]}'})
    with pytest.raises(PoolExhausted, match=r"request_ip_range\[1\]"):
        await allocator.allocate(other, pools, node="n", actor=actor)
    assert await scalar(db, "SELECT count(*) FROM addresses WHERE state <> 'free'") == 2


async def test_request_outside_every_pool_and_bad_args(
    allocator: Allocator, pool_service: PoolConfigService, seed_config: PoolConfig,
    actor: Actor,
) -> None:
    pools = await pools_for(pool_service, seed_config)
    outside = make_pod("o", annotations={"k8s.v1.cni.galaxy.io/args":
                                         '{"request_ip_range": [["192.168.0.1"]]}'})
    with pytest.raises(PoolExhausted, match="in no pool routable"):
        await allocator.allocate(outside, pools, node="n", actor=actor)
    broken = make_pod("b", annotations={"k8s.v1.cni.galaxy.io/args": "{"})
    with pytest.raises(InvalidInput, match="not valid JSON"):
        await allocator.allocate(broken, pools, node="n", actor=actor)


async def test_kept_address_goes_back_to_the_same_deployment(
    allocator: Allocator, pool_service: PoolConfigService, seed_config: PoolConfig,
    actor: Actor,
) -> None:
    pools = await pools_for(pool_service, seed_config)
    old = deployment_pod("web", "aaaaa")
    (first,) = await allocator.allocate(old, pools, node="n", actor=actor)
    await allocator.allocate(make_pod("bystander"), pools, node="n", actor=actor)
    (kept,) = await allocator.release_pod(old.uid, keep=True, actor=actor, reason="pod deleted")
    assert (kept.state, kept.owner_key, kept.pod_uid) == ("kept", "deploy/default/web", None)
    new = deployment_pod("web", "bbbbb")
    (again,) = await allocator.allocate(new, pools, node="n", actor=actor)
    assert again.address == first.address and again.pod_uid == new.uid


async def test_statefulset_ordinal_waits_for_the_old_pod(
    allocator: Allocator, pool_service: PoolConfigService, seed_config: PoolConfig,
    actor: Actor,
) -> None:
    pools = await pools_for(pool_service, seed_config)
    never = {"k8s.v1.cni.galaxy.io/release-policy": "never"}
    old = make_pod("db-0", annotations=never, owner=("StatefulSet", "db"))
    (held,) = await allocator.allocate(old, pools, node="n", actor=actor)
    new = make_pod("db-0", annotations=never, owner=("StatefulSet", "db"))
    with pytest.raises(Conflict, match="still held by pod default/db-0"):
        await allocator.allocate(new, pools, node="n", actor=actor)
    await allocator.release_pod(old.uid, keep=True, actor=actor, reason="pod deleted")
    (got,) = await allocator.allocate(new, pools, node="n", actor=actor)
    assert got.address == held.address


async def test_release_frees_for_default_policy(
    allocator: Allocator, pool_service: PoolConfigService, seed_config: PoolConfig,
    db: Database, actor: Actor,
) -> None:
    pools = await pools_for(pool_service, seed_config)
    pod = make_pod("a")
    (rec,) = await allocator.allocate(pod, pools, node="n", actor=actor)
    (freed,) = await allocator.release_pod(pod.uid, keep=False, actor=actor, reason="deleted")
    assert freed.state == "free" and freed.owner_key is None
    (again,) = await allocator.allocate(make_pod("b"), pools, node="n", actor=actor)
    assert again.address == rec.address
    assert await scalar(db, "SELECT count(*) FROM audit WHERE action = 'release'") == 1


async def test_no_routable_pool(allocator: Allocator, actor: Actor) -> None:
    with pytest.raises(PoolExhausted, match="no pool routes node n"):
        await allocator.allocate(make_pod("a"), [], node="n", actor=actor)


async def test_named_pool_size_caps_its_pods_and_its_addresses_are_shared(
    allocator: Allocator, pool_service: PoolConfigService, seed_config: PoolConfig,
    db: Database, actor: Actor,
) -> None:
    pools = await pools_for(pool_service, seed_config)
    async with db.transaction() as store:
        await store.named_pools.upsert("shared", 2, False)
    pool = {"tke.cloud.tencent.com/eni-ip-pool": "shared"}
    pods = [make_pod(f"s{i}", annotations=pool) for i in range(3)]
    results = await asyncio.gather(
        *(allocator.allocate(p, pools, node="n", actor=actor) for p in pods),
        return_exceptions=True)
    won = [r for r in results if isinstance(r, list)]
    lost = [r for r in results if not isinstance(r, list)]
    assert len(won) == 2 and len(lost) == 1
    assert isinstance(lost[0], PoolExhausted) and "named pool shared is full" in lost[0].message
    winner = next(p for p, r in zip(pods, results, strict=True) if isinstance(r, list))
    loser = next(p for p, r in zip(pods, results, strict=True) if not isinstance(r, list))
    (kept,) = await allocator.release_pod(winner.uid, keep=True, actor=actor, reason="gone")
    assert kept.owner_key == "pool/shared"
    (reused,) = await allocator.allocate(loser, pools, node="n", actor=actor)
    assert reused.address == kept.address


async def test_one_statement_bind_writes_the_audit_row_audit_entry_would(
    allocator: Allocator, pool_service: PoolConfigService, seed_config: PoolConfig,
    db: Database, actor: Actor,
) -> None:
    pools = await pools_for(pool_service, seed_config)
    for pod in (make_pod("bare"), deployment_pod("web", "aaaaa", policy="immutable")):
        (rec,) = await allocator.allocate(pod, pools, node="n", actor=actor)
        async with db.transaction() as store:
            (logged,) = await store.audit.query(AuditFilter(pod_uid=pod.uid), 10)
        assert logged.entry == audit_entry(actor, "allocate", None, rec)


async def test_what_is_held_stops_the_one_statement_take(
    allocator: Allocator, pool_service: PoolConfigService, seed_config: PoolConfig,
    db: Database, actor: Actor,
) -> None:
    """A StatefulSet ordinal still held, or a Deployment keeping an address: the combined
    statement must take nothing, so no free address is used up on the way to the answer."""
    pools = await pools_for(pool_service, seed_config)
    never = {"k8s.v1.cni.galaxy.io/release-policy": "never"}
    await allocator.allocate(make_pod("db-0", annotations=never, owner=("StatefulSet", "db")),
                             pools, node="n", actor=actor)
    old = deployment_pod("web", "aaaaa")
    (kept,) = await allocator.allocate(old, pools, node="n", actor=actor)
    await allocator.release_pod(old.uid, keep=True, actor=actor, reason="pod deleted")
    taken = "SELECT count(*) FROM addresses WHERE state <> 'free'"
    before = await scalar(db, taken)
    with pytest.raises(Conflict):
        await allocator.allocate(make_pod("db-0", annotations=never,
                                          owner=("StatefulSet", "db")),
                                 pools, node="n", actor=actor)
    assert await scalar(db, taken) == before
    (again,) = await allocator.allocate(deployment_pod("web", "bbbbb"), pools, node="n",
                                        actor=actor)
    assert again.address == kept.address
    assert await scalar(db, taken) == before


async def test_an_import_in_progress_holds_back_the_one_statement_bind(
    allocator: Allocator, pool_service: PoolConfigService, seed_config: PoolConfig,
    db: Database, actor: Actor,
) -> None:
    """The common bind takes no advisory lock; the import's table lock must still stop it."""
    pools = await pools_for(pool_service, seed_config)
    async with db.transaction() as store:
        await store.locks.config_exclusive()
        bind = asyncio.create_task(allocator.allocate(make_pod("a"), pools, node="n",
                                                      actor=actor))
        for _ in range(500):
            assert not bind.done(), "an allocation ran while the pool config was being written"
            waiting = await scalar(
                db, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%held AS%'")
            if waiting:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the allocation neither ran nor waited")
        assert not bind.done()
    (rec,) = await bind
    assert rec.state == "allocated"
