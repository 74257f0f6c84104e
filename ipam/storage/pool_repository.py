"""All SQL on ``pools`` and ``ranges``, including the config-import reshuffle of addresses."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from ipam.engine.ip_ranges import IPAddress, IpRange
from ipam.engine.pool_config import PoolSpec
from ipam.storage.records import PoolRecord, inet_address
from ipam.storage.sql import Sql


@dataclass(frozen=True, slots=True)
class PlacedRow:
    """An existing address row and the pool the new config puts it in (``None``: none)."""

    id: int
    address: IPAddress
    state: str
    owner_key: str | None
    pod: str | None
    pool_id: int
    new_pool: str | None


class PoolRepository:
    def __init__(self, sql: Sql) -> None:
        self.sql = sql

    async def all(self) -> list[PoolRecord]:
        pools = await self.sql.rows(
            "SELECT id, name, position, family, subnet, gateway, vlan, node_subnets, size, "
            "materialized_upto, quarantine_seconds FROM pools ORDER BY position, id")
        ranges = await self.sql.rows(
            'SELECT pool_id, "first", "last" FROM ranges ORDER BY pool_id, "first"')
        by_pool: dict[int, list[IpRange]] = {}
        for r in ranges:
            rng = IpRange.of(inet_address(r["first"]), inet_address(r["last"]))
            by_pool.setdefault(r["pool_id"], []).append(rng)
        return [
            PoolRecord(
                id=p["id"], name=p["name"], position=p["position"], family=p["family"],
                subnet=ipaddress.ip_network(str(p["subnet"])),
                gateway=inet_address(p["gateway"]) if p["gateway"] is not None else None,
                vlan=p["vlan"],
                node_subnets=tuple(ipaddress.ip_network(str(n)) for n in p["node_subnets"]),
                size=int(p["size"]), ranges=tuple(by_pool.get(p["id"], ())),
                materialized_upto=(inet_address(p["materialized_upto"])
                                   if p["materialized_upto"] is not None else None),
                quarantine_seconds=p["quarantine_seconds"],
            )
            for p in pools
        ]

    async def lock_high_water(self, pool_id: int, *, skip_locked: bool = False
                              ) -> tuple[bool, IPAddress | None]:
        """Lock the pool row for materialising; (exists, high-water mark). With
        ``skip_locked``, a row someone else holds counts as absent (no waiting)."""
        row = await self.sql.row(
            "SELECT materialized_upto FROM pools WHERE id = :p FOR UPDATE"
            + (" SKIP LOCKED" if skip_locked else ""), {"p": pool_id})
        if row is None:
            return False, None
        upto = row["materialized_upto"]
        return True, inet_address(upto) if upto is not None else None

    async def high_water(self, pool_id: int) -> IPAddress | None:
        """The high-water mark, read without locking."""
        value = await self.sql.scalar(
            "SELECT materialized_upto FROM pools WHERE id = :p", {"p": pool_id})
        return inet_address(value) if value is not None else None

    async def set_high_water(self, pool_id: int, upto: IPAddress) -> None:
        await self.sql.execute(
            "UPDATE pools SET materialized_upto = CAST(:u AS inet) WHERE id = :p",
            {"u": str(upto), "p": pool_id})

    async def place_rows(self, specs: Sequence[PoolSpec]) -> list[PlacedRow]:
        """Every address row with the new pool that would contain it (one SQL pass)."""
        names, firsts, lasts = [], [], []
        for spec in specs:
            for rng in spec.ranges:
                names.append(spec.name)
                firsts.append(str(rng.first_address))
                lasts.append(str(rng.last_address))
        rows = await self.sql.rows(
            """
            WITH r(pool, f, l) AS (
                SELECT * FROM unnest(CAST(:names AS text[]), CAST(:firsts AS inet[]),
                                     CAST(:lasts AS inet[])))
            SELECT a.id, a.address, a.state, a.owner_key,
                   a.pod_namespace || '/' || a.pod_name AS pod, a.pool_id, r.pool AS new_pool
            FROM addresses a LEFT JOIN r ON a.address BETWEEN r.f AND r.l
            ORDER BY a.address
            """, {"names": names, "firsts": firsts, "lasts": lasts})
        return [PlacedRow(r["id"], inet_address(r["address"]), r["state"], r["owner_key"],
                          r["pod"], r["pool_id"], r["new_pool"]) for r in rows]

    async def upsert(self, spec: PoolSpec, *, reset_high_water: bool) -> int:
        params = {
            "name": spec.name, "position": spec.position, "family": spec.version,
            "subnet": str(spec.subnet),
            "gateway": str(spec.gateway) if spec.gateway is not None else None,
            "vlan": spec.vlan, "nodes": [str(n) for n in spec.node_subnets],
            "size": spec.size, "reset": reset_high_water, "quarantine": spec.quarantine_seconds,
        }
        pool_id = await self.sql.scalar(
            """
            INSERT INTO pools (name, position, family, subnet, gateway, vlan, node_subnets, size,
                               quarantine_seconds)
            VALUES (:name, :position, :family, CAST(:subnet AS cidr), CAST(:gateway AS inet),
                    :vlan, CAST(:nodes AS cidr[]), :size, CAST(:quarantine AS integer))
            ON CONFLICT (name) DO UPDATE SET
                position = EXCLUDED.position, family = EXCLUDED.family,
                subnet = EXCLUDED.subnet, gateway = EXCLUDED.gateway, vlan = EXCLUDED.vlan,
                node_subnets = EXCLUDED.node_subnets, size = EXCLUDED.size,
                quarantine_seconds = EXCLUDED.quarantine_seconds,
                materialized_upto = CASE WHEN :reset THEN NULL
                                         ELSE pools.materialized_upto END,
                updated_at = now()
            RETURNING id
            """, params)
        assert pool_id is not None
        return int(pool_id)

    async def replace_ranges(self, pool_id: int, ranges: Sequence[IpRange]) -> None:
        await self.sql.execute("DELETE FROM ranges WHERE pool_id = :p", {"p": pool_id})
        if not ranges:
            return
        await self.sql.execute(
            """
            INSERT INTO ranges (pool_id, position, "first", "last", size)
            SELECT :p, ord - 1, f, l, s
            FROM unnest(CAST(:firsts AS inet[]), CAST(:lasts AS inet[]),
                        CAST(:sizes AS numeric[])) WITH ORDINALITY AS t(f, l, s, ord)
            """, {
                "p": pool_id,
                "firsts": [str(r.first_address) for r in ranges],
                "lasts": [str(r.last_address) for r in ranges],
                "sizes": [r.size for r in ranges],
            })

    async def set_row_pool(self, row_ids: Sequence[int], pool_id: int) -> None:
        if row_ids:
            await self.sql.execute(
                "UPDATE addresses SET pool_id = :p WHERE id = ANY(:ids)",
                {"p": pool_id, "ids": list(row_ids)})

    async def delete(self, pool_id: int) -> None:
        await self.sql.execute("DELETE FROM pools WHERE id = :p", {"p": pool_id})
