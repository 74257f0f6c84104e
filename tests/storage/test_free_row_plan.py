"""The free-row lookup must use the partial index, not walk every taken row."""

from __future__ import annotations

from ipam.storage.address_repository import _LOWEST_FREE
from ipam.storage.database import Database
from ipam.storage.sql import positional


async def test_generic_plan_of_the_lowest_free_lookup_uses_the_free_index(db: Database) -> None:
    """Prepared statements switch to a generic plan; written with ``pool_id = $1`` and
    ``ORDER BY address``, that plan walked the unique address index past every taken row."""
    async with db.transaction() as store:
        sql = store.sql
        await sql.execute(
            "INSERT INTO pools (id, name, position, family, subnet, gateway, vlan, "
            "node_subnets, size) VALUES (1, 'p', 0, 4, '10.64.0.0/16', '10.64.255.254', 0, "
            "ARRAY['10.0.0.0/16']::cidr[], 60000)")
        await sql.execute(
            "INSERT INTO addresses (pool_id, address) "
            "SELECT 1, '10.64.0.0'::inet + g FROM generate_series(1, 50000) g")
        await sql.execute(
            "UPDATE addresses SET state = 'allocated', owner_key = 'pod/x/' || id, "
            "pod_uid = 'u' || id, policy = 'pod-delete' WHERE id IN "
            "(SELECT id FROM addresses ORDER BY address LIMIT 5000)")
    async with db.transaction() as store:
        await store.sql.execute("ANALYZE addresses")
        await store.sql.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        stmt = positional(_LOWEST_FREE)
        plan = await store.sql.rows("EXPLAIN " + stmt.sql.replace("$1", "CAST(:p AS int)"),
                                    {"p": 1})
    text = "\n".join(r["QUERY PLAN"] for r in plan)
    assert "ix_addresses_free" in text, text
    assert "uq_addresses_address" not in text, text
