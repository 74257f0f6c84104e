"""A PostgreSQL session-level advisory lock on a connection of its own: leadership.

The lock lives exactly as long as its connection. A replica that crashes or loses the
database loses the lock with it (TCP keepalives bound how long a silent partition takes),
so another replica can take over; no lease clock, no extra RBAC.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

LEADER_LOCK = 0x1BA5_0100
log = logging.getLogger(__name__)


class SessionLock:
    def __init__(self, engine: AsyncEngine, key: int = LEADER_LOCK) -> None:
        self.engine = engine
        self.key = key
        self._conn: AsyncConnection | None = None
        # One connection, several callers (the election loop, every leader-only action):
        # a connection runs one statement at a time, so they take turns.
        self._mutex = asyncio.Lock()

    async def try_acquire(self) -> bool:
        async with self._mutex:
            return await self._try_acquire()

    async def held(self) -> bool:
        """True while our connection is alive and still holds the lock."""
        async with self._mutex:
            return await self._held()

    async def release(self) -> None:
        async with self._mutex:
            await self._release()

    async def _try_acquire(self) -> bool:
        if self._conn is not None:
            return await self._held()
        conn = await self.engine.connect()
        try:
            got = bool(await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}))
            await conn.commit()
        except BaseException:
            await conn.close()
            raise
        if not got:
            await conn.close()
            return False
        self._conn = conn
        return True

    async def _held(self) -> bool:
        if self._conn is None:
            return False
        try:
            ok = bool(await asyncio.wait_for(self._conn.scalar(text(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                "AND pid = pg_backend_pid() AND objid = :k AND granted)"),
                {"k": self.key & 0xFFFFFFFF}), timeout=5))
            await self._conn.commit()
        except Exception as exc:  # the connection is gone or stuck: so is the lock
            log.warning("leader lock check failed, lock given up: %s: %s",
                        type(exc).__name__, exc)
            ok = False
        if not ok:
            await self._drop()
        return ok

    async def _release(self) -> None:
        if self._conn is None:
            return
        with contextlib.suppress(Exception):
            await self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            await self._conn.commit()
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()
