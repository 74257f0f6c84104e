"""One truth across replicas (issue 13, item 6): two service stacks (allocator, catalog,
placement, change feed) on two engines against one database. What one replica, or a writer
outside the service such as ``ipam check --repair``, commits reaches the other's filter as
soon as the notification is delivered, and that filter never offers a node whose pool is
exhausted. Every wait is on a condition the feed signals, bounded by a timeout."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from ipam.engine.pool_config import parse_pool_config
from ipam.services.allocation import Actor, Allocator
from ipam.services.pool_config import PoolConfigService
from ipam.services.runtime import Runtime
from ipam.settings import Settings
from ipam.storage.database import Database
from tests.services.helpers import make_pod

NODE, NODE_IP = "node-1", ipaddress.ip_address("10.10.100.7")
POOL = {"routableSubnet": "10.10.100.0/24", "ips": ["10.80.0.1~10.80.0.5"],
        "subnet": "10.80.0.0/24", "gateway": "10.80.0.254"}
SIZE = 5
ACTOR = Actor("test")
WAIT = 15.0  # a bound on each wait, never a way to sync


async def until(rt: Runtime, predicate: Callable[[], bool]) -> None:
    assert rt.feed is not None
    async with asyncio.timeout(WAIT):
        await rt.feed.wait_for(predicate)


@asynccontextmanager
async def replica(url: str, *, listen: bool = True,
                  wrap: Callable[[Callable[[], Awaitable[Any]]], Callable[[], Awaitable[Any]]]
                  | None = None) -> AsyncIterator[Runtime]:
    db = Database(url, pool_size=4, max_overflow=4)
    rt = Runtime.build(Settings(controllers_enabled=False), db)
    try:
        await rt.catalog.refresh(db)
        rt.nodes.replace([(NODE, NODE_IP)])
        if listen:
            assert rt.feed is not None
            if wrap is not None:
                rt.feed.connector = wrap(rt.feed.connector)
            rt.start()
            await until(rt, lambda: rt.feed is not None and rt.feed.up)
        yield rt
    finally:
        await rt.stop()
        await db.dispose()


def taken(rt: Runtime) -> int:
    (pool,) = rt.catalog.pools
    return rt.catalog.taken.get(pool.id, 0)


NEWCOMER = make_pod("newcomer")


async def verdict(rt: Runtime) -> list[str] | str:
    """The node list filter passes for one pending pod, or its reason for failing the node
    (always the same pod: its promise is replaced, not added to)."""
    outcome = await rt.placement.filter_names(NEWCOMER, [NODE])
    return outcome.passed or outcome.failed[NODE]


@pytest.fixture
async def configured(db: Database, db_url: str) -> str:
    await PoolConfigService(db).apply(parse_pool_config([POOL]), actor=ACTOR)
    return db_url


async def test_allocations_by_one_replica_reach_the_other_filter_at_once(
    configured: str,
) -> None:
    async with replica(configured) as a, replica(configured) as b, \
            replica(configured, listen=False) as stale:
        pools = a.catalog.pools
        for n in range(1, SIZE + 1):
            await a.allocator.allocate(make_pod(f"web-{n}"), pools, node=NODE, actor=ACTOR)
            await until(b, lambda n=n: taken(b) == n)
            # B's filter decides on what A committed: room while there is, none after.
            if n < SIZE:
                assert await verdict(b) == [NODE]
        assert await verdict(b) == "pool 10.80.0.0/24 exhausted"
        # Without the feed, a replica's cached count still says 5 free: it would offer the
        # node and the bind would be refused - what this test guards against.
        assert taken(stale) == 0 and await verdict(stale) == [NODE]
        # A's own notifications come back to it and are skipped (its allocator's listener
        # counted them already): A counts 5, not 10.
        await until(a, lambda: a.feed is not None and a.feed.stats["own"] >= SIZE)
        assert taken(a) == SIZE and a.feed is not None and a.feed.stats["applied"] == 0


async def test_a_writer_outside_the_service_is_seen_by_every_replica(configured: str) -> None:
    """``ipam check --repair`` runs in a process of its own, with no change feed: the
    triggers of migration 0003 announce its changes."""
    async with replica(configured) as a, replica(configured) as b:
        pods = [make_pod(f"db-{n}") for n in range(SIZE)]
        for pod in pods:
            await a.allocator.allocate(pod, a.catalog.pools, node=NODE, actor=ACTOR)
        await until(b, lambda: taken(b) == SIZE)
        assert await verdict(b) == "pool 10.80.0.0/24 exhausted"

        repair = Database(configured, pool_size=1, max_overflow=0)
        try:
            tool = Allocator(repair)
            for pod in pods[:2]:
                await tool.release_pod(pod.uid, keep=False, actor=Actor("ipam check"),
                                       reason="pod gone")
            await until(a, lambda: taken(a) == SIZE - 2)
            await until(b, lambda: taken(b) == SIZE - 2)
            assert await verdict(b) == [NODE]
            for n in range(2):
                await tool.allocate(make_pod(f"adopted-{n}"), a.catalog.pools, node=NODE,
                                    actor=Actor("ipam check"))
        finally:
            await repair.dispose()
        await until(b, lambda: taken(b) == SIZE)
        assert await verdict(b) == "pool 10.80.0.0/24 exhausted"
        assert taken(a) == SIZE


async def test_changes_missed_while_the_listener_was_down_are_recounted_on_reconnect(
    configured: str,
) -> None:
    gate = asyncio.Event()
    gate.set()
    opened: list[Any] = []

    def held(connect: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
        async def gated() -> Any:
            await gate.wait()
            conn = await connect()
            opened.append(conn)
            return conn
        return gated

    async with replica(configured) as a, replica(configured, wrap=held) as b:
        assert b.feed is not None
        await a.allocator.allocate(make_pod("one"), a.catalog.pools, node=NODE, actor=ACTOR)
        await until(b, lambda: taken(b) == 1)
        gate.clear()
        admin = await asyncpg.connect(configured.replace("postgresql+asyncpg", "postgresql"))
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", opened[-1].get_server_pid())
        finally:
            await admin.close()
        await until(b, lambda: b.feed is not None and not b.feed.up)
        for n in range(SIZE - 1):  # nobody tells B: its listener is down
            await a.allocator.allocate(make_pod(f"two-{n}"), a.catalog.pools, node=NODE,
                                       actor=ACTOR)
        assert taken(b) == 1
        gate.set()
        await until(b, lambda: b.feed is not None and b.feed.up)
        assert taken(b) == SIZE  # recounted before it said it was up again
        assert b.feed.stats["connects"] == 2 and b.feed.stats["errors"] >= 1
        assert await verdict(b) == "pool 10.80.0.0/24 exhausted"


async def test_a_pool_config_change_elsewhere_is_re_read(configured: str, db: Database) -> None:
    async with replica(configured) as a:
        bigger = dict(POOL, ips=["10.80.0.1~10.80.0.9"])
        await PoolConfigService(db).apply(parse_pool_config([bigger]), actor=ACTOR)
        await until(a, lambda: [p.size for p in a.catalog.pools] == [9])
