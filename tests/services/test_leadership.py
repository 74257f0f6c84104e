"""Leadership on a PostgreSQL advisory lock: exclusive, checked concurrently, handed over."""

from __future__ import annotations

import asyncio

from ipam.services.leadership import Leadership
from ipam.storage.database import Database


async def test_concurrent_checks_do_not_lose_leadership(db_url: str) -> None:
    # Every leader-only action confirms on the same lock connection; before the mutex, two
    # at once failed with "another operation is in progress" and the leader stepped down.
    db = Database(db_url, pool_size=2, max_overflow=0)
    leader = Leadership(db, retry_seconds=3600)
    try:
        assert await leader.step()
        results = await asyncio.gather(*(leader.confirm() for _ in range(50)),
                                       leader.step(), leader.step())
        assert all(results) and leader.is_leader and leader.terms == 1
    finally:
        await leader.resign()
        await db.dispose()


async def test_only_one_leader_and_handover(db_url: str) -> None:
    dbs = [Database(db_url, pool_size=2, max_overflow=0) for _ in range(2)]
    a, b = (Leadership(d, retry_seconds=3600) for d in dbs)
    try:
        assert await a.step() is True
        assert await b.step() is False
        await a.resign()
        assert await b.step() is True and b.terms == 1
        assert await a.confirm() is False
    finally:
        await b.resign()
        for d in dbs:
            await d.dispose()
