"""Leadership on a PostgreSQL advisory lock: exclusive, checked concurrently, handed over,
and back after a database error (supervised, logged)."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

from ipam.services.leadership import Leadership
from ipam.services.runtime import Readiness
from ipam.services.supervisor import Supervisor
from ipam.storage.database import Database
from ipam.storage.session_lock import LEADER_LOCK
from tests.service_harness import wait_until


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


async def test_database_error_is_logged_retried_and_leadership_comes_back(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The lock's connection is killed while the database refuses new connections: the loss
    is logged with its cause, every failed round is logged with its traceback and counted,
    and the lock is taken again once the database accepts connections."""
    db = Database(db_url, pool_size=2, max_overflow=0)
    leader = Leadership(db, retry_seconds=0.02)
    readiness = Readiness()
    supervisor = Supervisor([0.02], readiness)
    base, name = db_url.replace("postgresql+asyncpg://", "postgresql://").rsplit("/", 1)
    name, _, query = name.partition("?")
    # From another database: PostgreSQL refuses to disallow connections to the current one.
    admin = await asyncpg.connect(f"{base}/postgres" + (f"?{query}" if query else ""))
    caplog.set_level(logging.INFO)
    supervisor.every("leadership", leader.retry_seconds, leader.step, first=0)
    try:
        await wait_until(lambda: leader.is_leader)
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        killed = await admin.fetchval(  # this test's database only: others run beside it
            "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l "
            "JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND l.objid = $1 AND d.datname = $2",
            LEADER_LOCK & 0xFFFFFFFF, name)
        assert killed == 1
        health = supervisor.health["leadership"]
        await wait_until(lambda: health.failures >= 2)
        assert not leader.is_leader and health.state == "failing"
        assert any(r.getMessage().startswith("lost leadership: the lock is no longer held")
                   for r in caplog.records)
        failed = [r for r in caplog.records
                  if r.getMessage().startswith("background task leadership failed")]
        assert failed and all(r.exc_info is not None for r in failed)
        assert "not currently accepting connections" in health.last_error
        assert readiness.conditions["task:leadership"][0]  # a follower still serves

        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await wait_until(lambda: leader.is_leader)
        assert leader.terms == 2 and health.state == "running"
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
        await supervisor.stop()
        await leader.resign()
        await db.dispose()


async def test_resign_is_final(db_url: str) -> None:
    """Shutdown resigns while the election loop may still run a round: it must not take the
    lock back (the other replica would wait a full retry period for nothing)."""
    db = Database(db_url, pool_size=2, max_overflow=0)
    leader = Leadership(db, retry_seconds=3600)
    try:
        assert await leader.step()
        await leader.resign()
        assert await leader.step() is False and not leader.is_leader
    finally:
        await db.dispose()
