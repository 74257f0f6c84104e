"""Who runs the controllers: the replica holding a PostgreSQL advisory lock.

Every replica serves the extender and watches pods and nodes (its caches need them); only
the leader releases addresses on pod deletion and runs the reconciler. Why PostgreSQL rather
than a coordination.k8s.io Lease: the state the leader changes lives in PostgreSQL, the lock
dies with the leader's connection (a crashed leader is replaced at the next retry, not after
a lease expires), and a replica cut off from PostgreSQL could not act anyway. Every repair
also re-checks row state under row locks, so even an overlap could not release twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from ipam.storage.database import Database
from ipam.storage.session_lock import LEADER_LOCK, SessionLock

log = logging.getLogger(__name__)


class Leadership:
    def __init__(self, db: Database, *, retry_seconds: float, key: int = LEADER_LOCK,
                 on_elected: Callable[[], Awaitable[None]] | None = None) -> None:
        self.lock = SessionLock(db.engine, key)
        self.retry_seconds = retry_seconds
        self.on_elected = on_elected
        self.is_leader = False
        self.terms = 0
        self._stop = asyncio.Event()

    async def step(self) -> bool:
        """One round: keep or try to take the lock. Returns whether we lead afterwards."""
        was = self.is_leader
        try:
            self.is_leader = await (self.lock.held() if was else self.lock.try_acquire())
        except Exception as exc:
            log.warning("leader election: %s", exc)
            self.is_leader = False
        if self.is_leader and not was:
            self.terms += 1
            log.info("became leader (term %d)", self.terms)
            if self.on_elected is not None:
                await self.on_elected()
        elif was and not self.is_leader:
            log.warning("lost leadership")
        return self.is_leader

    async def confirm(self) -> bool:
        """Check right before leader-only work that the lock is still ours."""
        if not self.is_leader:
            return False
        self.is_leader = await self.lock.held()
        return self.is_leader

    async def run(self) -> None:
        while not self._stop.is_set():
            await self.step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.retry_seconds)

    async def resign(self) -> None:
        self._stop.set()
        self.is_leader = False
        await self.lock.release()
