"""Statements on the asyncpg connection: parameter translation, results, transactions."""

from __future__ import annotations

import pytest

from ipam.errors import InvalidInput, Unavailable
from ipam.storage.database import Database
from ipam.storage.sql import positional


def test_named_parameters_become_numbered_once_each() -> None:
    stmt = positional("SELECT :a::int + CAST(:b AS int) + :a WHERE x = 'it''s :lit'::text")
    # ``::int`` stays a cast, a repeated name reuses its number, literals are left alone.
    assert stmt.sql == "SELECT $1::int + CAST($2 AS int) + $1 WHERE x = 'it''s :lit'::text"
    assert stmt.names == ("a", "b")
    assert stmt.args({"a": 1, "b": 2}) == [1, 2]
    with pytest.raises(KeyError):
        stmt.args({"a": 1})
    assert positional("SELECT 1").args(None) == []


async def test_rows_scalars_and_affected_counts(db: Database) -> None:
    async with db.transaction() as store:
        sql = store.sql
        await sql.execute("CREATE TEMP TABLE t (k int PRIMARY KEY, v text) ON COMMIT DROP")
        await sql.execute_many("INSERT INTO t VALUES (:k, :v)",
                               [{"k": 1, "v": "a"}, {"k": 2, "v": "b"}, {"k": 3, "v": "c"}])
        await sql.execute_many("INSERT INTO t VALUES (:k, :v)", [{"k": 4, "v": "d"}])
        await sql.execute_many("INSERT INTO t VALUES (:k, :v)", [])
        assert await sql.execute("UPDATE t SET v = upper(v) WHERE k > :k", {"k": 1}) == 3
        rows = await sql.rows("SELECT k, v FROM t ORDER BY k")
        assert [(r["k"], r["v"]) for r in rows] == [(1, "a"), (2, "B"), (3, "C"), (4, "D")]
        assert await sql.scalar("SELECT count(*) FROM t WHERE v = :v", {"v": "a"}) == 1
        assert await sql.row("SELECT k FROM t WHERE k = :k", {"k": 9}) is None


async def test_a_failed_block_rolls_back_and_bad_values_are_input_errors(db: Database) -> None:
    async with db.transaction() as store:
        await store.sql.execute("CREATE TABLE sql_probe (k int)")
    with pytest.raises(RuntimeError):
        async with db.transaction() as store:
            await store.sql.execute("INSERT INTO sql_probe VALUES (:k)", {"k": 1})
            raise RuntimeError("abort the unit of work")
    with pytest.raises(InvalidInput):
        async with db.transaction() as store:
            await store.sql.execute("INSERT INTO sql_probe VALUES (:k)", {"k": 2})
            await store.sql.scalar("SELECT CAST(:v AS inet)", {"v": "not-an-address"})
    async with db.transaction() as store:
        assert await store.sql.scalar("SELECT count(*) FROM sql_probe") == 0


async def test_a_killed_connection_is_unavailable_and_not_reused(db: Database) -> None:
    async with db.transaction() as store:
        pid = await store.sql.scalar("SELECT pg_backend_pid()")
    with pytest.raises(Unavailable):
        async with db.transaction() as store:
            if await store.sql.scalar("SELECT pg_backend_pid()") != pid:
                pytest.skip("the pool handed out another connection")
            async with db.transaction() as other:
                await other.sql.scalar("SELECT pg_terminate_backend(:p)", {"p": pid})
            await store.sql.scalar("SELECT 1")
    # The dead connection was invalidated: the next transaction gets a live one.
    async with db.transaction() as store:
        assert await store.sql.scalar("SELECT 1") == 1
