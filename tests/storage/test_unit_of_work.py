"""The unit of work records changes: audit rows before COMMIT, listeners after it, and on a
rollback neither."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from sqlalchemy import text

from ipam.engine.pool_config import parse_pool_config
from ipam.services.allocation import Actor
from ipam.services.pool_config import PoolConfigService
from ipam.storage.database import Database
from ipam.storage.records import AddressRecord, AuditEntry, Holder

ADDRESS = ipaddress.ip_address("10.20.0.1")
Heard = list[tuple[AddressRecord | None, AddressRecord | None]]


class Boom(Exception):
    pass


async def scalar(db: Database, sql: str) -> Any:
    async with db.engine.connect() as conn:
        return await conn.scalar(text(sql))


async def setup(db: Database) -> tuple[int, Heard]:
    await PoolConfigService(db).apply(parse_pool_config(
        [{"routableSubnet": "10.10.100.0/24", "ips": ["10.20.0.1~10.20.0.9"],
          "subnet": "10.20.0.0/24"}]), actor=Actor("test"))
    async with db.transaction() as store:
        (pool,) = await store.pools.all()
        await store.addresses.materialize(pool.id, [ADDRESS])
    heard: Heard = []
    db.listeners.append(lambda before, after: heard.append((before, after)))
    return pool.id, heard


async def reserve(db: Database, *, fail: bool) -> None:
    async with db.transaction() as store:
        row = await store.addresses.by_address(ADDRESS, lock=True)
        assert row is not None
        after = await store.addresses.change(row.id, Holder(state="reserved",
                                                            owner_key="reserved/t"))
        store.changed(row, after, AuditEntry(actor="t", action="reserve", address=ADDRESS))
        if fail:
            raise Boom


async def test_a_rolled_back_transaction_notifies_nobody_and_writes_no_audit_row(
        db: Database) -> None:
    _, heard = await setup(db)
    before = await scalar(db, "SELECT count(*) FROM audit")
    with pytest.raises(Boom):
        await reserve(db, fail=True)
    assert heard == []
    assert await scalar(db, "SELECT count(*) FROM audit") == before
    assert await scalar(db, "SELECT state FROM addresses") == "free"


async def test_a_committed_change_is_audited_once_and_heard_after_commit(
        db: Database) -> None:
    _, heard = await setup(db)
    before = await scalar(db, "SELECT count(*) FROM audit")

    seen_inside: Heard = []
    async with db.transaction() as store:
        row = await store.addresses.by_address(ADDRESS, lock=True)
        assert row is not None
        after = await store.addresses.change(row.id, Holder(state="kept", owner_key="o"))
        store.changed(row, after, AuditEntry(actor="t", action="keep", address=ADDRESS))
        seen_inside.extend(heard)  # nothing is announced before COMMIT
    assert seen_inside == []
    assert [(b.state if b else None, a.state if a else None) for b, a in heard] == [
        ("free", "kept")]
    assert await scalar(db, "SELECT count(*) FROM audit") == before + 1


async def test_a_single_statement_store_refuses_audit_rows(db: Database) -> None:
    """Outside a transaction an audit row could commit without its change, or the reverse."""
    async with db.single_statement() as store:
        with pytest.raises(RuntimeError, match="need a transaction"):
            store.log(AuditEntry(actor="t", action="x"))


async def test_a_failing_listener_does_not_undo_or_fail_a_committed_change(
        db: Database, caplog: pytest.LogCaptureFixture) -> None:
    _, heard = await setup(db)

    def broken(before: AddressRecord | None, after: AddressRecord | None) -> None:
        raise ValueError("cache bug")

    db.listeners.insert(0, broken)
    await reserve(db, fail=False)
    assert len(heard) == 1  # the next listener still heard it
    assert await scalar(db, "SELECT state FROM addresses") == "reserved"
    assert any(r.name == "ipam.storage.database" and "listener failed" in r.getMessage()
               for r in caplog.records)
