"""Every address change through the allocator and the operator paths is one audit row and
one notification, in the same order (the unit of work records both)."""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import text

from ipam.engine.pool_config import parse_pool_config
from ipam.services.address_admin import AddressAdmin
from ipam.services.allocation import Actor
from ipam.services.runtime import Runtime
from ipam.settings import Settings
from ipam.storage.database import Database
from ipam.storage.records import AddressRecord
from tests.services.helpers import deployment_pod, make_pod, routable

ACTOR = Actor("test")
NODE = "10.10.100.5"


async def audited(db: Database, after_id: int) -> list[tuple[str, str | None]]:
    """Audit rows of address changes since ``after_id``: (address, state after)."""
    async with db.engine.connect() as conn:
        result = await conn.execute(text(
            "SELECT host(address), after->>'state' FROM audit WHERE id > :id "
            "AND address IS NOT NULL AND (before IS NOT NULL OR after IS NOT NULL) "
            "ORDER BY id"), {"id": after_id})
        return [(r[0], r[1]) for r in result]


async def last_id(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int(await conn.scalar(text("SELECT coalesce(max(id), 0) FROM audit")))


async def test_each_change_is_one_audit_row_and_one_notification(db: Database) -> None:
    rt = Runtime.build(Settings(controllers_enabled=False, quarantine_seconds=60), db)
    await rt.pools.apply(parse_pool_config(
        [{"routableSubnet": "10.10.100.0/24", "ips": ["10.20.0.1~10.20.0.30"],
          "subnet": "10.20.0.0/24"}]), actor=ACTOR)
    pools = routable(await rt.pools.current(), NODE)
    heard: list[tuple[str, str | None]] = []

    def listen(before: AddressRecord | None, after: AddressRecord | None) -> None:
        row = after or before
        assert row is not None
        heard.append((str(row.address), after.state if after is not None else None))

    db.listeners.append(listen)
    allocator, admin = rt.allocator, AddressAdmin(rt)
    start = await last_id(db)
    counts: dict[str, int] = {}

    async def step(name: str, work: Any) -> None:
        before = len(heard)
        await work
        counts[name] = len(heard) - before

    plain, first, second = make_pod("plain"), deployment_pod("web", "a"), deployment_pod(
        "web", "b")
    await step("allocate one statement", allocator.allocate(plain, pools, node="n",
                                                             actor=ACTOR))
    await step("allocate in a transaction", allocator.allocate(first, pools, node="n",
                                                               actor=ACTOR))
    await step("keep", allocator.release_pod(first.uid, keep=True, actor=ACTOR, reason="r"))
    await step("reuse", allocator.allocate(second, pools, node="n", actor=ACTOR))
    await step("quarantine", allocator.release_pod(plain.uid, keep=False, actor=ACTOR,
                                                   reason="r"))
    async with db.engine.begin() as conn:
        await conn.execute(text("UPDATE addresses SET quarantined_until = now() - "
                                "interval '1 second' WHERE state = 'quarantined'"))
    await step("sweep", allocator.end_quarantines())
    await step("reserve", admin.reserve(ipaddress.ip_address("10.20.0.20"),
                                        holder_name="ops", note=None, actor=ACTOR))
    await step("release", admin.release(ipaddress.ip_address("10.20.0.20"), force=False,
                                        actor=ACTOR))
    await step("pre-allocate", admin.set_named_pool("batch", 2, True, ACTOR))
    await step("delete named pool", admin.delete_named_pool("batch", ACTOR))
    (held,) = await allocator.pod_addresses(second.uid)
    assert held.owner_key is not None
    await step("release owner", admin.release_owner(held.owner_key, force=True, actor=ACTOR))
    adopted = make_pod("legacy")
    await step("adopt", allocator.adopt(adopted, ipaddress.ip_address("10.20.0.25"),
                                        pools[0], actor=ACTOR, reason="r"))
    await step("audit only", admin.container_deleted("default", "legacy", "c1", None, ACTOR))

    assert counts == {
        "allocate one statement": 1, "allocate in a transaction": 1, "keep": 1, "reuse": 1,
        "quarantine": 1, "sweep": 1, "reserve": 1, "release": 1, "pre-allocate": 2,
        "delete named pool": 2, "release owner": 1, "adopt": 1, "audit only": 0}
    assert await audited(db, start) == heard
