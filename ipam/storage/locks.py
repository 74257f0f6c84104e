"""Advisory locks: the pool config is written exclusively, read shared by every allocation.

Allocations do not lock each other (row locks with SKIP LOCKED do that work); they only keep
a config import from moving rows under them. The common bind is a single statement in a
transaction of its own and takes no advisory lock; the import's table lock covers it.
"""

from __future__ import annotations

from ipam.storage.sql import Sql

CONFIG_LOCK = 0x1BA5_0001
OWNER_LOCK_SPACE = 0x1BA5_0002


class Locks:
    def __init__(self, sql: Sql) -> None:
        self.sql = sql

    async def try_config_shared(self) -> bool:
        """The shared config lock (``Database.transaction(config_shared=True)``) without
        waiting: never queues behind a pending import."""
        got = await self.sql.scalar("SELECT pg_try_advisory_xact_lock_shared(:k)",
                                     {"k": CONFIG_LOCK})
        return bool(got)

    async def config_exclusive(self) -> None:
        """Keep every allocation out while the config is rewritten: transactions holding
        the shared lock, and (through the table lock, which conflicts with the row-exclusive
        lock any write takes) the one-statement allocations that run without it. Advisory
        lock first, so this never holds the table while waiting for a shared holder."""
        await self.sql.execute("SELECT pg_advisory_xact_lock(:k)", {"k": CONFIG_LOCK})
        await self.sql.execute("LOCK TABLE addresses IN SHARE ROW EXCLUSIVE MODE")

    async def owner(self, owner_key: str) -> None:
        """Serialise decisions about one owner's addresses (e.g. two of its pods deleted)."""
        await self.sql.execute("SELECT pg_advisory_xact_lock(:ns, hashtext(:k))",
                                {"ns": OWNER_LOCK_SPACE, "k": owner_key})

