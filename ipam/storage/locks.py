"""Advisory locks: the pool config is written exclusively, read shared by every allocation.

Allocations do not lock each other (row locks with SKIP LOCKED do that work); they only keep
a config import from moving rows under them.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

CONFIG_LOCK = 0x1BA5_0001
OWNER_LOCK_SPACE = 0x1BA5_0002


class Locks:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def config_shared(self) -> None:
        await self.conn.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": CONFIG_LOCK})

    async def try_config_shared(self) -> bool:
        """``config_shared`` without waiting (never queues behind a pending import)."""
        got = await self.conn.scalar(text("SELECT pg_try_advisory_xact_lock_shared(:k)"),
                                     {"k": CONFIG_LOCK})
        return bool(got)

    async def config_exclusive(self) -> None:
        await self.conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CONFIG_LOCK})

    async def owner(self, owner_key: str) -> None:
        """Serialise decisions about one owner's addresses (e.g. two of its pods deleted)."""
        await self.conn.execute(text("SELECT pg_advisory_xact_lock(:ns, hashtext(:k))"),
                                {"ns": OWNER_LOCK_SPACE, "k": owner_key})

    async def try_session_lock(self, key: int) -> bool:
        """Non-blocking session lock (leader election); held until released or disconnect."""
        got = await self.conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
        return bool(got)
