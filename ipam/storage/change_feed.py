"""Pool usage changes, announced between replicas over PostgreSQL LISTEN/NOTIFY.

Every replica keeps per-pool taken counts in memory for filter (``services.placement_state``).
Changes reach those counts on two paths, both on the channel ``ipam_changes``:

* the service's own connections are marked (``SET ipam.publisher = <origin>``, once per
  pooled connection) and announce what they changed right after commit, batched, from the
  feed's own connection with ``synchronous_commit = off``. The NOTIFY is outside the writing
  transaction because a NOTIFY takes a database-wide lock held through the commit's WAL flush:
  in every bind it would serialise all commits (pgbench here: 3,250 -> 1,180 tps at 8 clients,
  3,360 -> 740 at 32).
* any other writer (``ipam check --repair`` in its own process, SQL by hand) is announced by
  the statement-level triggers of migration 0003, in its own transaction.

Payloads: ``a|origin|nonce|pool:delta:since_us,...`` (taken-count deltas) and ``p`` (pools or
ranges changed: re-read them). ``since_us`` is the start of the changing transaction on the
database's clock; its commit came later. A reader that recounted at time T (``taken_counts``
returns T) therefore knows a change with ``since_us >= T`` is not in its count; an older one
may be, and the reader resolves that doubt towards counting too many (see ``PoolCatalog``).

A lost connection is re-opened with backoff; on every (re)connect ``on_connected`` runs after
LISTEN is in place (the caller recounts: notifications sent meanwhile are gone). Notifications
from our own origin are skipped: the allocator's listeners applied those already.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import asyncpg
from sqlalchemy import event

from ipam.storage.database import Database
from ipam.storage.records import AddressRecord
from ipam.storage.sql import Sql

log = logging.getLogger(__name__)

CHANNEL = "ipam_changes"
#: Under PostgreSQL's 8,000-byte payload limit, with room for the header.
MAX_PAYLOAD = 7000
#: Most entries one notification may carry (anything longer is not ours).
MAX_ENTRIES = 2000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_MARK = "ipam.change_feed.origin"


class Delta(NamedTuple):
    """``change`` more (or fewer) taken addresses in a pool, by a transaction that started at
    ``since_us`` (microseconds since the epoch, the database's clock)."""

    pool_id: int
    change: int
    since_us: int


class Message(NamedTuple):
    kind: str  # "a": deltas, "p": pools changed
    origin: str
    deltas: tuple[Delta, ...] = ()


def micros(when: datetime) -> int:
    return (when - _EPOCH) // _MICROSECOND


def address_delta(before: AddressRecord | None, after: AddressRecord | None) -> Delta | None:
    """What one row's change does to its pool's taken count (``None``: nothing)."""
    was = before is not None and before.state != "free"
    now = after is not None and after.state != "free"
    row = after or before
    if row is None or was == now:
        return None
    return Delta(row.pool_id, 1 if now else -1, micros(row.updated_at))


_TAKEN_COUNTS = """
    SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS at,
           array_agg(pool_id) AS pools, array_agg(n) AS counts
    FROM (SELECT pool_id, count(*) AS n FROM addresses WHERE state <> 'free'
          AND (CAST(:p AS integer) IS NULL OR pool_id = :p) GROUP BY pool_id) c
"""


async def taken_counts(sql: Sql, pool_id: int | None = None) -> tuple[dict[int, int], int]:
    """Taken rows per pool (one pool, or all), and a time (microseconds, the database's clock)
    read after the statement's snapshot: a transaction started later is not counted."""
    row = await sql.row(_TAKEN_COUNTS, {"p": pool_id})
    assert row is not None
    counts = dict(zip(row["pools"] or (), row["counts"] or (), strict=True))
    return {int(k): int(v) for k, v in counts.items()}, int(row["at"])


def decode(payload: str) -> Message:
    """A notification's payload; ``ValueError`` for anything not in our format."""
    if payload == "p":
        return Message("p", "")
    kind, origin, _nonce, body = payload.split("|", 3)
    if kind != "a" or not body:
        raise ValueError(f"unknown notification kind {kind!r}")
    entries = body.split(",")
    if len(entries) > MAX_ENTRIES:
        raise ValueError(f"{len(entries)} entries")
    deltas = []
    for entry in entries:
        pool, change, since = entry.split(":")
        deltas.append(Delta(int(pool), int(change), int(since)))
    return Message("a", origin, tuple(deltas))


def encode(origin: str, nonce: int, deltas: Iterable[Delta]) -> list[str]:
    """Payloads carrying ``deltas``, each under ``MAX_PAYLOAD`` bytes and distinct."""
    out: list[str] = []
    parts: list[str] = []
    size = 0
    for d in deltas:
        part = f"{d.pool_id}:{d.change}:{d.since_us}"
        if parts and (size + len(part) > MAX_PAYLOAD or len(parts) >= MAX_ENTRIES):
            out.append(f"a|{origin}|{nonce}.{len(out)}|{','.join(parts)}")
            parts, size = [], 0
        parts.append(part)
        size += len(part) + 1
    if parts:
        out.append(f"a|{origin}|{nonce}.{len(out)}|{','.join(parts)}")
    return out


Connector = Callable[[], Awaitable[Any]]


class ChangeFeed:
    """One LISTEN connection per process: applies other writers' changes as they commit and
    announces this process's own (``publish``)."""

    def __init__(self, db: Database, *, on_deltas: Callable[[Sequence[Delta]], None],
                 on_pools: Callable[[], None], on_connected: Callable[[], Awaitable[None]],
                 backoff_seconds: Sequence[float] = (0.5, 1, 2, 5, 10),
                 keepalive_seconds: float = 10.0, connect: Connector | None = None) -> None:
        self.db = db
        self.on_deltas = on_deltas
        self.on_pools = on_pools
        self.on_connected = on_connected
        self.backoff = list(backoff_seconds) or [1.0]
        self.keepalive = keepalive_seconds
        #: How the LISTEN connection is opened (tests wrap it to hold a reconnect back).
        self.connector: Connector = connect or self._connect_listener
        #: Tells our notifications from everybody else's (and marks our connections).
        self.origin = secrets.token_hex(8)
        self.up = False
        self.stats = {"connects": 0, "errors": 0, "applied": 0, "own": 0, "malformed": 0,
                      "published": 0}
        self._outbox: dict[tuple[int, bool], tuple[int, int]] = {}
        self._wake = asyncio.Event()
        self._nonce = 0
        self._sending = False
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._last_warning = 0.0

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Mark the pool's connections as publishers and start listening (idempotent)."""
        if self._task is not None:
            return
        event.listen(self.db.engine.sync_engine, "checkout", self._mark_publisher)
        self._task = asyncio.create_task(self.run(), name="change-feed")

    async def stop(self) -> None:
        """Announce what is still queued (briefly), then close."""
        if self._task is None:
            return
        if self._outbox and self.up:
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self.wait_for(
                        lambda: not (self._outbox or self._sending) or not self.up)
        event.remove(self.db.engine.sync_engine, "checkout", self._mark_publisher)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._outbox:
            log.warning("change feed stopped with %d unannounced pool count change(s); other "
                        "replicas recount them at their next refresh", len(self._outbox))

    def _mark_publisher(self, dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        """Once per pooled connection: tell the triggers of migration 0003 that this
        connection's changes are announced by ``publish`` (after commit, not in it)."""
        if record.info.get(_MARK) == self.origin:
            return
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True  # a SET inside a transaction rolls back with it
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"SET ipam.publisher = '{self.origin}'")  # hex: no quoting needed
        finally:
            cursor.close()
            dbapi_connection.autocommit = autocommit
        record.info[_MARK] = self.origin

    async def _connect_listener(self) -> Any:
        """A connection of its own, outside the pool (a LISTEN lives as long as it does)."""
        _, kwargs = self.db.engine.dialect.create_connect_args(self.db.engine.url)
        accepted = inspect.signature(asyncpg.connect).parameters
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
        settings = dict(kwargs.pop("server_settings", None) or {})
        # Announcements carry no data of their own: no need to wait for their WAL flush.
        settings.update(synchronous_commit="off", application_name="ipam-change-feed")
        return await asyncpg.connect(**kwargs, server_settings=settings, timeout=5)

    # -- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, LISTEN, recount, then serve until the connection fails; forever."""
        failures = 0
        while True:
            conn: Any = None
            delay = 0.0
            try:
                conn = await self.connector()
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notification)
                await self.on_connected()
                self.up = True
                self.stats["connects"] += 1
                if failures:
                    log.info("change feed: listening again after %d failed attempt(s)",
                             failures)
                failures = 0
                self.signal()
                await self._serve(conn, lost)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats["errors"] += 1
                delay = self.backoff[min(failures, len(self.backoff) - 1)]
                failures += 1
                log.warning("change feed: %s: %s; other replicas' changes reach this one "
                            "only by the periodic recount until it is back (retry in %.1f s)",
                            type(exc).__name__, str(exc)[:200], delay)
            finally:
                self.up = False
                if conn is not None:
                    conn.terminate()
                self.signal()
            await asyncio.sleep(delay)

    async def _serve(self, conn: Any, lost: asyncio.Event) -> None:
        while True:
            self._wake.clear()
            if lost.is_set():
                raise ConnectionError("listener connection closed")
            if self._outbox:
                await self._flush(conn)
                continue
            woken = asyncio.ensure_future(self._wake.wait())
            closed = asyncio.ensure_future(lost.wait())
            try:
                done, _ = await asyncio.wait({woken, closed}, timeout=self.keepalive,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()
                closed.cancel()
            if lost.is_set():
                raise ConnectionError("listener connection closed")
            if not done:
                # Idle: a dead peer or a half-open socket shows up here, not by itself.
                await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=self.keepalive)

    # -- announcing our own changes -------------------------------------------------------
    def publish(self, delta: Delta) -> None:
        """Queue one committed change of ours for the other replicas (sent within a round
        trip; merged with others of the same pool and sign, keeping the oldest start)."""
        if self._task is None:
            return  # not started (``ipam check``): the triggers announce this process's changes
        key = (delta.pool_id, delta.change > 0)
        count, since = self._outbox.get(key, (0, delta.since_us))
        self._outbox[key] = (count + delta.change, min(since, delta.since_us))
        self._wake.set()

    async def _flush(self, conn: Any) -> None:
        batch, self._outbox = self._outbox, {}
        self._nonce += 1
        payloads = encode(self.origin, self._nonce,
                          (Delta(pool, change, since)
                           for (pool, _), (change, since) in batch.items()))
        self._sending = True
        sent = 0
        try:
            for payload in payloads:
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
                sent += 1
        except BaseException:
            # Keep the rest for the next connection. The payload that failed may have been
            # delivered all the same: of it, only takes are sent again (twice counts high;
            # a free counted twice would count low).
            for i, payload in enumerate(payloads[sent:]):
                for delta in decode(payload).deltas:
                    if i or delta.change > 0:
                        self.publish(delta)
            raise
        finally:
            self._sending = False
        self.stats["published"] += len(batch)
        self.signal()

    # -- receiving ------------------------------------------------------------------------
    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            message = decode(payload)
        except ValueError as exc:
            self.stats["malformed"] += 1
            self._warn(f"change feed: ignored a notification not in our format ({exc}): "
                       f"{payload[:80]!r}")
            return
        if message.origin == self.origin:
            self.stats["own"] += 1  # applied by the allocator's listeners already
        else:
            try:
                if message.kind == "p":
                    self.on_pools()
                else:
                    self.on_deltas(message.deltas)
                self.stats["applied"] += 1
            except Exception:
                log.exception("change feed: applying a notification failed")
        self.signal()

    def _warn(self, text: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 60:
            self._last_warning = now
            log.warning("%s (further ones within a minute are not logged)", text)

    def signal(self) -> None:
        """Wake ``wait_for`` callers: something they may be watching changed."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Until ``predicate()`` holds, re-checked after each notification and connect (the
        caller bounds the wait, e.g. ``asyncio.timeout``)."""
        while True:
            changed = self._changed
            if predicate():
                return
            await changed.wait()
