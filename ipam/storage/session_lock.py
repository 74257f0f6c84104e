"""A PostgreSQL session-level advisory lock on a connection of its own: leadership.

The lock lives exactly as long as its connection. A replica that crashes or loses the
database loses the lock with it (TCP keepalives bound how long a silent partition takes),
so another replica can take over; no lease clock, no extra RBAC.
"""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

LEADER_LOCK = 0x1BA5_0100


class SessionLock:
    def __init__(self, engine: AsyncEngine, key: int = LEADER_LOCK) -> None:
        self.engine = engine
        self.key = key
        self._conn: AsyncConnection | None = None

    async def try_acquire(self) -> bool:
        if self._conn is not None:
            return await self.held()
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

    async def held(self) -> bool:
        """True while our connection is alive and still holds the lock."""
        if self._conn is None:
            return False
        try:
            ok = bool(await asyncio.wait_for(self._conn.scalar(text(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                "AND pid = pg_backend_pid() AND objid = :k AND granted)"),
                {"k": self.key & 0xFFFFFFFF}), timeout=5))
            await self._conn.commit()
        except Exception:
            ok = False
        if not ok:
            await self._drop()
        return ok

    async def release(self) -> None:
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
