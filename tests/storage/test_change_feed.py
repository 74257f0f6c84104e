"""The change feed's wire: what the triggers of migration 0003 and the service's own
announcements put on ``ipam_changes``, and how a feed reads it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from ipam.storage.change_feed import (
    CHANNEL,
    MAX_PAYLOAD,
    ChangeFeed,
    Delta,
    decode,
    encode,
    taken_counts,
)
from ipam.storage.database import Database

WAIT = 15.0


def dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def seed(conn: Any, pools: int, per_pool: int = 1) -> list[int]:
    """``pools`` pools of ``per_pool`` free addresses each, in 10.0.0.0/8."""
    ids = await conn.fetch(
        "INSERT INTO pools (name, position, family, subnet, node_subnets, size) "
        "SELECT 'p' || g, g, 4, ('10.' || (g / 256) || '.' || (g % 256) || '.0/24')::cidr, "
        "'{10.255.0.0/16}', $2 FROM generate_series(1, $1) g RETURNING id", pools, per_pool)
    await conn.execute(
        "INSERT INTO addresses (pool_id, address) "
        "SELECT p.id, (host(p.subnet)::inet + h) FROM pools p, generate_series(1, $1) h",
        per_pool)
    return [r["id"] for r in ids]


TAKE = ("UPDATE addresses SET state = 'allocated', owner_key = 'o', pod_uid = 'u' "
        "WHERE state = 'free' AND pool_id = ANY($1::int[])")


class Listener:
    """A plain LISTEN connection collecting decoded payloads."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.payloads: list[str] = []
        self.arrived = asyncio.Event()

    def __call__(self, _c: Any, _pid: int, _channel: str, payload: str) -> None:
        self.payloads.append(payload)
        self.arrived.set()

    async def until(self, count: int) -> list[str]:
        async with asyncio.timeout(WAIT):
            while len(self.payloads) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.payloads


@pytest.fixture
async def listener(db_url: str) -> AsyncIterator[Listener]:
    conn = await asyncpg.connect(dsn(db_url))
    got = Listener(conn)
    await conn.add_listener(CHANNEL, got)
    yield got
    await conn.close()


@pytest.fixture
async def writer(db_url: str) -> AsyncIterator[Any]:
    conn = await asyncpg.connect(dsn(db_url))
    yield conn
    await conn.close()


def total(payloads: list[str]) -> dict[int, int]:
    out: dict[int, int] = {}
    for payload in payloads:
        for d in decode(payload).deltas:
            out[d.pool_id] = out.get(d.pool_id, 0) + d.change
    return out


async def test_a_statement_over_a_thousand_pools_is_chunked_under_the_payload_limit(
    listener: Listener, writer: Any,
) -> None:
    pools = await seed(writer, 1000)
    await listener.until(1)  # the pools' own "p"
    listener.payloads.clear()
    await writer.execute(TAKE, pools)
    await writer.execute("SELECT pg_notify($1, 'end')", CHANNEL)
    payloads = (await listener.until(2))
    while payloads[-1] != "end":
        payloads = await listener.until(len(payloads) + 1)
    chunks = payloads[:-1]
    assert len(chunks) > 1 and all(len(p.encode()) <= MAX_PAYLOAD + 100 for p in chunks)
    assert total(chunks) == dict.fromkeys(pools, 1)
    assert {decode(p).origin for p in chunks} == {""}  # not a service connection


async def test_identical_changes_in_one_transaction_are_not_folded(
    listener: Listener, writer: Any,
) -> None:
    """PostgreSQL delivers identical payloads of one transaction once: each statement's
    payload carries its own sequence number, or the second +1 would be lost."""
    (pool,) = await seed(writer, 1, per_pool=3)
    await listener.until(1)
    listener.payloads.clear()
    async with writer.transaction():
        for _ in range(3):
            await writer.execute(TAKE.replace("WHERE", "WHERE address = (SELECT min(address) "
                                              "FROM addresses WHERE state = 'free') AND"),
                                 [pool])
    assert total(await listener.until(3)) == {pool: 3}


async def test_kept_is_still_taken_and_free_rows_do_not_count(
    listener: Listener, writer: Any,
) -> None:
    (pool,) = await seed(writer, 1, per_pool=4)
    await writer.execute(TAKE, [pool])
    await writer.execute("UPDATE addresses SET state = 'kept', pod_uid = NULL")
    await writer.execute("DELETE FROM addresses WHERE address = "
                         "(SELECT max(address) FROM addresses)")
    await writer.execute("INSERT INTO addresses (pool_id, address) VALUES ($1, '10.0.1.99')",
                         pool)
    await writer.execute("SELECT pg_notify($1, 'end')", CHANNEL)
    payloads = await listener.until(3)
    while payloads[-1] != "end":
        payloads = await listener.until(len(payloads) + 1)
    assert [decode(p).kind for p in payloads[:-1]] == ["p", "a", "a"]
    assert total(payloads[1:-1]) == {pool: 4 - 1}


async def test_service_connections_are_left_to_announce_themselves(
    db: Database, db_url: str, listener: Listener, writer: Any,
) -> None:
    (pool,) = await seed(writer, 1, per_pool=2)
    await listener.until(1)
    applied: list[Delta] = []

    async def recount() -> None:
        pass

    feed = ChangeFeed(db, on_deltas=applied.extend, on_pools=lambda: None,
                      on_connected=recount)
    feed.start()
    try:
        async with asyncio.timeout(WAIT):
            await feed.wait_for(lambda: feed.up)
        async with db.transaction() as store:  # a pooled connection: marked as the feed's
            changed = await store.sql.execute(
                TAKE.replace("$1::int[]", "ARRAY[CAST(:p AS integer)]"), {"p": pool})
            counts, read_at = await taken_counts(store.sql)
        assert changed == 2 and counts == {pool: 2}
        feed.publish(Delta(pool, 2, read_at))
        payloads = await listener.until(2)
        assert [(m.kind, m.origin, m.deltas) for m in map(decode, payloads[1:])] == [
            ("a", feed.origin, (Delta(pool, 2, read_at),))]  # no trigger payload for it
        async with asyncio.timeout(WAIT):
            await feed.wait_for(lambda: feed.stats["own"] == 1)
        assert applied == []  # our own: the allocator's listeners counted it already

        # A writer outside the service is applied; garbage on the channel is not.
        await writer.execute("SELECT pg_notify($1, 'a|x|1|not:a:delta'), pg_notify($1, '')",
                             CHANNEL)
        await writer.execute("UPDATE addresses SET state = 'free', owner_key = NULL, "
                             "pod_uid = NULL WHERE address = (SELECT min(address) FROM "
                             "addresses)")
        async with asyncio.timeout(WAIT):
            await feed.wait_for(lambda: bool(applied))
        assert [(d.pool_id, d.change) for d in applied] == [(pool, -1)]
        assert feed.stats["malformed"] == 2 and feed.up
    finally:
        await feed.stop()


async def test_a_member_of_the_app_role_fires_the_triggers(
    db: Database, db_url: str, listener: Listener, writer: Any,
) -> None:
    (pool,) = await seed(writer, 1)
    await listener.until(1)
    name = f"ipam_svc_{uuid.uuid4().hex[:10]}"
    async with db.engine.begin() as conn:
        await conn.execute(text(f'CREATE ROLE "{name}" LOGIN IN ROLE ipam_app'))
    try:
        member = await asyncpg.connect(dsn(make_url(db_url).set(username=name)
                                           .render_as_string(hide_password=False)))
        try:
            await member.execute(TAKE, [pool])
        finally:
            await member.close()
        assert total((await listener.until(2))[1:]) == {pool: 1}
    finally:
        async with db.engine.begin() as conn:
            await conn.execute(text(f'DROP ROLE "{name}"'))


def test_encode_chunks_and_decode_reads_back() -> None:
    deltas = [Delta(n, (-1) ** n * n, 1_796_400_966_916_247 + n) for n in range(1, 1200)]
    payloads = encode("abc", 7, deltas)
    assert len(payloads) > 1 and all(len(p) <= MAX_PAYLOAD + 40 for p in payloads)
    assert len(set(payloads)) == len(payloads)
    assert [d for p in payloads for d in decode(p).deltas] == deltas
    assert decode("p").kind == "p"
    for bad in ("", "x|y", "q|o|1|1:1:1", "a|o|1|", "a|o|1|1:1", "a|o|1|a:b:c"):
        with pytest.raises(ValueError):
            decode(bad)


async def test_a_failed_announcement_is_kept_without_counting_a_free_twice(db: Database) -> None:
    """The connection breaks on the second of two payloads: the second's changes are kept
    for the next connection, but of the payload that failed only its takes (it may have been
    delivered anyway: a take twice counts high, a free twice would count low)."""
    never = asyncio.Event()

    async def unreachable() -> Any:
        await never.wait()

    async def recount() -> None:
        pass

    feed = ChangeFeed(db, on_deltas=lambda _d: None, on_pools=lambda: None,
                      on_connected=recount, connect=unreachable)
    feed.start()
    try:
        taken = [Delta(n, 1, 10 + n) for n in range(1, 400)]
        freed = [Delta(n, -1, 10 + n) for n in range(400, 800)]
        for delta in taken + freed:
            feed.publish(delta)

        class BreaksOnSecond:
            payloads: list[str] = []

            async def execute(self, _sql: str, _channel: str, payload: str) -> None:
                if self.payloads:
                    raise ConnectionResetError("gone")
                self.payloads.append(payload)

        conn = BreaksOnSecond()
        with pytest.raises(ConnectionResetError):
            await feed._flush(conn)
        sent = {d for p in conn.payloads for d in decode(p).deltas}
        assert sent and sent < set(taken + freed)
        kept = {Delta(pool, change, since) for (pool, _), (change, since) in feed._outbox.items()}
        second = set(decode(encode(feed.origin, 1, taken + freed)[1]).deltas)
        assert kept == (set(taken + freed) - sent - second) | {
            d for d in second if d.change > 0}
    finally:
        await feed.stop()
