"""The schema itself: migrations up and down, the append-only audit trail, constraints."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from ipam.storage.database import Database, head_revision, migrate
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
