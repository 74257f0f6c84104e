"""The schema itself: migrations up and down, the append-only audit trail, constraints."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from ipam.storage.database import Database, head_revision, migrate, wait_for_schema
from ipam.storage.records import AuditEntry


async def test_schema_is_at_head(db: Database) -> None:
    assert await db.schema_revision() == head_revision()


async def test_migrations_go_down_and_up_again(db: Database) -> None:
    await migrate(db, "base", down=True)
    assert await db.schema_revision() is None
    await migrate(db)
    assert await db.schema_revision() == head_revision()


@pytest.mark.parametrize("statement", ["UPDATE audit SET actor = 'forged'", "DELETE FROM audit",
                                       "TRUNCATE audit"])
async def test_audit_rows_cannot_be_changed_even_by_the_owner(db: Database, statement: str
                                                              ) -> None:
    async with db.transaction() as store:
        await store.audit.record(AuditEntry(actor="a", action="allocate", reason="x"))
    with pytest.raises(DBAPIError, match="append-only"):
        async with db.engine.begin() as conn:
            await conn.execute(text(statement))
    async with db.engine.connect() as conn:
        assert await conn.scalar(text("SELECT actor FROM audit")) == "a"


async def test_database_refuses_one_address_twice(db: Database) -> None:
    async with db.engine.begin() as conn:
        pool_id = await conn.scalar(text(
            "INSERT INTO pools (name, position, family, subnet, node_subnets, size) "
            "VALUES ('p', 0, 4, '10.0.0.0/24', '{10.1.0.0/24}', 10) RETURNING id"))
        await conn.execute(text("INSERT INTO addresses (pool_id, address) VALUES (:p, '10.0.0.1')"),
                           {"p": pool_id})
    with pytest.raises(IntegrityError, match="uq_addresses_address"):
        async with db.engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO addresses (pool_id, address) VALUES (:p, '10.0.0.1')"), {"p": pool_id})
    with pytest.raises(IntegrityError, match="ck_addresses_pod_iff_allocated"):
        async with db.engine.begin() as conn:
            await conn.execute(text(
                "UPDATE addresses SET state = 'allocated', owner_key = 'x' "
                "WHERE address = '10.0.0.1'"))


async def test_schema_wait_rides_out_a_database_not_reachable_yet(
        caplog: pytest.LogCaptureFixture) -> None:
    """A first install starts the service before its database answers (a CloudNativePG
    cluster still coming up): serve waits for it as for a schema not migrated yet, saying
    so, and raises the connection error only at the deadline."""
    import socket

    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db = Database(f"postgresql+asyncpg://ipam@127.0.0.1:{port}/ipam", pool_size=1,
                  max_overflow=0)
    try:
        with caplog.at_level("WARNING", logger="ipam.storage.database"), \
                pytest.raises((OSError, DBAPIError)):
            await wait_for_schema(db, 5, unreachable_seconds=0.3, poll=0.05)
    finally:
        await db.dispose()
    waits = [r.getMessage() for r in caplog.records if r.name == "ipam.storage.database"]
    assert any("cannot be reached yet" in m for m in waits), waits


async def test_schema_wait_fails_at_once_on_an_unreachable_database_by_default(
        caplog: pytest.LogCaptureFixture) -> None:
    """Without the opt-in (a wrong URL, most often) the error comes at once, no waiting."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db = Database(f"postgresql+asyncpg://ipam@127.0.0.1:{port}/ipam", pool_size=1,
                  max_overflow=0)
    try:
        with caplog.at_level("WARNING", logger="ipam.storage.database"), \
                pytest.raises((OSError, DBAPIError)):
            await wait_for_schema(db, 600, poll=0.05)
    finally:
        await db.dispose()
    assert not [r for r in caplog.records if r.name == "ipam.storage.database"]
