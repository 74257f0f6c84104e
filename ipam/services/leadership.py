"""Who runs the controllers: the replica holding a PostgreSQL advisory lock.

Every replica serves the extender and watches pods and nodes (its caches need them); only
the leader releases addresses on pod deletion and runs the reconciler. Why PostgreSQL rather
than a coordination.k8s.io Lease: the state the leader changes lives in PostgreSQL, the lock
dies with the leader's connection (a crashed leader is replaced at the next retry, not after
a lease expires), and a replica cut off from PostgreSQL could not act anyway. Every repair
also re-checks row state under row locks, so even an overlap could not release twice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from ipam.storage.database import Database
from ipam.storage.session_lock import LEADER_LOCK, SessionLock

log = logging.getLogger(__name__)


class Leadership:
    """The election state of this replica. ``step`` is one round; the loop that repeats it
    every ``retry_seconds`` is the caller's supervised task (``ipam.k8s.controllers``)."""

    def __init__(self, db: Database, *, retry_seconds: float, key: int = LEADER_LOCK,
                 on_elected: Callable[[], Awaitable[None]] | None = None) -> None:
        self.lock = SessionLock(db.engine, key)
        self.retry_seconds = retry_seconds
        self.on_elected = on_elected
        self.is_leader = False
        self.terms = 0
        self._resigned = False

    async def step(self) -> bool:
        """One round: keep or try to take the lock. Returns whether we lead afterwards.

        An error while checking or taking the lock is raised, for the supervisor to log with
        its traceback and retry; until a round succeeds again this replica does not lead.
        """
        if self._resigned:
            return False
        was = self.is_leader
        try:
            self.is_leader = await (self.lock.held() if was else self.lock.try_acquire())
        except BaseException as exc:
            self.is_leader = False
            if was:
                log.warning("lost leadership: checking the lock failed: %s: %s",
                            type(exc).__name__, exc)
            raise
        if self.is_leader and not was:
            self.terms += 1
            log.info("became leader (term %d)", self.terms)
            if self.on_elected is not None:
                await self.on_elected()
        elif was and not self.is_leader:
            log.warning("lost leadership: the lock is no longer held (its database "
                        "connection broke or was closed)")
        return self.is_leader

    async def confirm(self) -> bool:
        """Check right before leader-only work that the lock is still ours; any doubt (an
        error included, which is logged) answers no."""
        if not self.is_leader:
            return False
        try:
            held = await self.lock.held()
        except Exception as exc:
            log.warning("lost leadership: checking the lock failed: %s: %s",
                        type(exc).__name__, exc, exc_info=exc)
            held = False
        if not held and self.is_leader:
            log.warning("lost leadership: the lock is no longer held (its database "
                        "connection broke or was closed)")
        self.is_leader = held
        return held

    async def resign(self) -> None:
        """Give the lock up for good (shutdown): later rounds do not take it again."""
        self._resigned = True
        self.is_leader = False
        await self.lock.release()
