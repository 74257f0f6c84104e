"""Operator reads of ``addresses``: filtered keyset pages, usage per range, galaxy's listing.

Rows exist only for addresses that were handed out or materialised (docs/design.md), so a
page that may contain free addresses is built by walking the configured ranges in address
order and merging in the rows of that window: every configured address is listed exactly
once, free or not, whatever is allocated or released while a client pages through. Pages
that can only hold taken addresses (a state other than free, or a node/namespace/owner
filter) are plain keyset scans of the rows. Either way the cursor is the last address.

Also galaxy's ``GET /v1/ip`` listing (``galaxy_page``: its fields derived from owner keys,
filtered, sorted and paged in SQL), and the SQL of galaxy's named pools (``named_pools``: the
size and pre-allocation flag galaxy's ``/v1/pool`` API records; the addresses themselves are
``pool/<name>`` rows).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ipam.engine.ip_ranges import IPAddress, IPNetwork, to_address
from ipam.storage.address_repository import _COLUMNS, to_record
from ipam.storage.pool_repository import PoolRepository
from ipam.storage.records import AddressRecord, PoolRecord
from ipam.storage.sql import Row, Sql

#: Addresses examined per round trip when free ones may be listed.
WINDOW = 1024


@dataclass(frozen=True, slots=True)
class AddressFilter:
    pool: str | None = None
    subnet: IPNetwork | None = None
    node: str | None = None
    namespace: str | None = None
    #: Exact owner key, or a prefix when it ends with ``*`` (``sts/db/mysql/*``).
    owner: str | None = None
    state: str | None = None

    @property
    def taken_only(self) -> bool:
        """Whether only rows that are not free can match (no range walk needed)."""
        return (self.state not in (None, "free") or self.node is not None
                or self.namespace is not None or self.owner is not None)


@dataclass(frozen=True, slots=True)
class FreeSlot:
    """A configured address without a row: free, never handed out (or not since import)."""

    pool: PoolRecord
    address: IPAddress


@dataclass(frozen=True, slots=True)
class GalaxyFilter:
    """galaxy's ``GET /v1/ip`` filters, on the fields ``api.galaxy.floating_ip`` derives from a
    row. A keyword alone: it must be part of the namespace, app, pod or pool name. Otherwise
    every field given must equal; ``None`` (or empty) matches all."""

    keyword: str | None = None
    namespace: str | None = None
    app_name: str | None = None
    pod_name: str | None = None
    pool_name: str | None = None
    app_type: str | None = None


@dataclass(frozen=True, slots=True)
class GalaxyPage:
    #: Rows matching the filter, all pages together.
    total: int
    #: The page: rows from ``min(offset, total)`` in the order asked for.
    rows: list[AddressRecord]


@dataclass(frozen=True, slots=True)
class NamedPool:
    name: str
    size: int
    pre_allocate_ip: bool
    updated_at: datetime


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"


@dataclass(frozen=True, slots=True)
class _Span:
    version: int
    first: int
    last: int
    pool: PoolRecord


def _spans(pools: Sequence[PoolRecord], subnet: IPNetwork | None) -> list[_Span]:
    spans = []
    for pool in pools:
        for rng in pool.ranges:
            first, last = rng.first, rng.last
            if subnet is not None:
                if subnet.version != rng.version:
                    continue
                first = max(first, int(subnet.network_address))
                last = min(last, int(subnet.broadcast_address))
                if first > last:
                    continue
            spans.append(_Span(rng.version, first, last, pool))
    spans.sort(key=lambda s: (s.version, s.first))
    return spans


def _window(spans: Sequence[_Span], after: IPAddress | None, count: int
            ) -> list[tuple[IPAddress, PoolRecord]]:
    """Up to ``count`` configured addresses after ``after``, in (family, address) order."""
    out: list[tuple[IPAddress, PoolRecord]] = []
    for span in spans:
        start = span.first
        if after is not None:
            if span.version < after.version:
                continue
            if span.version == after.version:
                if span.last <= int(after):
                    continue
                start = max(start, int(after) + 1)
        stop = min(span.last, start + (count - len(out)) - 1)
        out.extend((to_address(v, span.version), span.pool) for v in range(start, stop + 1))
        if len(out) >= count:
            break
    return out


#: galaxy's fields of a taken row, as ``api.galaxy.floating_ip`` builds them from the owner
#: key (``deploy/ns/app``, ``sts/ns/app/N``, ``ctrl/ns/Kind/app``, ``pool/name``, ``pod/ns/name``);
#: an empty value is no value. Kept equal to it by tests/api/test_galaxy_listing.py.
#: Quarantined rows are cooling down for nobody in particular: galaxy never lists such an
#: address, so its API here does not either.
_GALAXY_FIELDS = """
    WITH base AS (
        SELECT {columns}, a.owner_key AS g_key, split_part(a.owner_key, '/', 1) AS g_kind,
               length(a.owner_key) - length(replace(a.owner_key, '/', '')) + 1 AS g_parts,
               CASE WHEN a.state = 'allocated' THEN NULLIF(a.pod_name, '') END AS g_live
        FROM addresses a JOIN pools p ON p.id = a.pool_id
        WHERE a.state NOT IN ('free', 'quarantined')
    ), fields AS (
        SELECT base.*,
            NULLIF(CASE
                WHEN g_kind IN ('deploy', 'pod') AND g_parts = 3
                  OR g_kind IN ('sts', 'ctrl') AND g_parts = 4 THEN split_part(g_key, '/', 2)
                WHEN g_kind = 'pool' AND g_live IS NOT NULL THEN pod_namespace
            END, '') AS g_namespace,
            NULLIF(CASE
                WHEN g_kind = 'deploy' AND g_parts = 3 OR g_kind = 'sts' AND g_parts = 4
                    THEN split_part(g_key, '/', 3)
                WHEN g_kind = 'ctrl' AND g_parts = 4 THEN split_part(g_key, '/', 4)
            END, '') AS g_app,
            NULLIF(CASE
                WHEN g_kind = 'deploy' AND g_parts = 3 THEN 'deployment'
                WHEN g_kind = 'sts' AND g_parts = 4 THEN 'statefulset'
                WHEN g_kind = 'ctrl' AND g_parts = 4 AND split_part(g_key, '/', 3) = 'TApp'
                    THEN 'tapp'
                WHEN g_kind = 'ctrl' AND g_parts = 4 THEN lower(split_part(g_key, '/', 3))
            END, '') AS g_type,
            NULLIF(CASE
                WHEN g_kind = 'sts' AND g_parts = 4
                    THEN split_part(g_key, '/', 3) || '-' || split_part(g_key, '/', 4)
                WHEN g_kind = 'pod' AND g_parts = 3 THEN split_part(g_key, '/', 3)
                WHEN g_kind = 'deploy' AND g_parts = 3 OR g_kind = 'ctrl' AND g_parts = 4
                  OR g_kind = 'pool' THEN g_live
            END, '') AS g_pod,
            CASE WHEN g_kind = 'pool' THEN NULLIF(substr(g_key, 6), '') END AS g_pool,
            CASE policy WHEN 'pod-delete' THEN 0 WHEN 'immutable' THEN 1 WHEN 'never' THEN 2
                ELSE CASE WHEN state = 'reserved' THEN 2 ELSE 0 END END AS g_policy
        FROM base
    ), matched AS (
        SELECT * FROM fields WHERE CASE WHEN CAST(:keyword AS text) IS NOT NULL THEN
            coalesce(strpos(g_namespace, :keyword) > 0 OR strpos(g_app, :keyword) > 0
                     OR strpos(g_pod, :keyword) > 0 OR strpos(g_pool, :keyword) > 0, false)
        ELSE (CAST(:namespace AS text) IS NULL OR g_namespace = :namespace)
            AND (CAST(:app AS text) IS NULL OR g_app = :app)
            AND (CAST(:pod AS text) IS NULL OR g_pod = :pod)
            AND (CAST(:pool AS text) IS NULL OR g_pool = :pool)
            AND (CAST(:type AS text) IS NULL OR g_type = :type) END
    )
    SELECT n.total, page.* FROM (SELECT count(*) AS total FROM matched) n
    LEFT JOIN LATERAL (
        SELECT * FROM matched ORDER BY {order}
        OFFSET LEAST(CAST(:offset AS bigint), n.total) LIMIT :limit
    ) page ON true
"""

#: galaxy's sorts; ties stay in address order, as Python's stable sort left them. Text in
#: code-point order (``COLLATE "C"``), as Python compares strings; no value sorts as "".
_GALAXY_ORDERS = {
    "ip": "address",
    "ip desc": "address DESC",
    "namespace": "coalesce(g_namespace, '') COLLATE \"C\", address",
    "namespace desc": "coalesce(g_namespace, '') COLLATE \"C\" DESC, address",
    "podname": "coalesce(g_pod, '') COLLATE \"C\", address",
    "podname desc": "coalesce(g_pod, '') COLLATE \"C\" DESC, address",
    "policy": "g_policy, address",
    "policy desc": "g_policy DESC, address",
}
GALAXY_ORDERS = frozenset(_GALAXY_ORDERS)


class AddressQuery:
    def __init__(self, sql: Sql) -> None:
        self.sql = sql

    async def page(self, flt: AddressFilter, after: IPAddress | None, limit: int
                   ) -> list[AddressRecord | FreeSlot]:
        """Up to ``limit`` addresses after ``after`` in address order (IPv4 before IPv6)."""
        if flt.taken_only:
            return list(await self._rows_page(flt, after, limit))
        pools = [p for p in await PoolRepository(self.sql).all()
                 if flt.pool is None or p.name == flt.pool]
        spans = _spans(pools, flt.subnet)
        out: list[AddressRecord | FreeSlot] = []
        cursor = after
        while len(out) < limit:
            # Unfiltered, every address of the window is listed; for free ones some may not be.
            wanted = limit - len(out) if flt.state is None else max(WINDOW, limit)
            window = _window(spans, cursor, wanted)
            if not window:
                break
            rows = await self._rows_between(window[0][0], window[-1][0])
            for address, pool in window:
                row = rows.get(address)
                if flt.state == "free" and row is not None and row.state != "free":
                    continue
                out.append(row if row is not None else FreeSlot(pool, address))
                if len(out) == limit:
                    break
            cursor = window[-1][0]
        return out

    async def _rows_page(self, flt: AddressFilter, after: IPAddress | None, limit: int
                         ) -> list[AddressRecord]:
        where = ["a.state <> 'free'" if flt.state is None else "a.state = :state"]
        params: dict[str, Any] = {"state": flt.state, "limit": limit}
        if flt.pool is not None:
            where.append("p.name = :pool")
            params["pool"] = flt.pool
        if flt.subnet is not None:
            where.append("a.address <<= CAST(:subnet AS cidr)")
            params["subnet"] = str(flt.subnet)
        if flt.node is not None:
            where.append("a.node = :node")
            params["node"] = flt.node
        if flt.namespace is not None:
            where.append("a.pod_namespace = :ns")
            params["ns"] = flt.namespace
        if flt.owner is not None:
            if flt.owner.endswith("*"):
                where.append("a.owner_key LIKE :owner")
                params["owner"] = _like_prefix(flt.owner[:-1])
            else:
                where.append("a.owner_key = :owner")
                params["owner"] = flt.owner
        if after is not None:
            where.append("a.address > CAST(:after AS inet)")
            params["after"] = str(after)
        rows = await self.sql.rows(
            f"SELECT {_COLUMNS} FROM addresses a JOIN pools p ON p.id = a.pool_id "
            f"WHERE {' AND '.join(where)} ORDER BY a.address LIMIT :limit", params)
        return [to_record(r) for r in rows]

    async def _rows_between(self, first: IPAddress, last: IPAddress
                            ) -> dict[IPAddress, AddressRecord]:
        rows = await self.sql.rows(
            f"SELECT {_COLUMNS} FROM addresses a JOIN pools p ON p.id = a.pool_id "
            "WHERE a.address BETWEEN CAST(:f AS inet) AND CAST(:l AS inet)",
            {"f": str(first), "l": str(last)})
        records = (to_record(r) for r in rows)
        return {rec.address: rec for rec in records}

    async def by_addresses(self, addresses: Sequence[IPAddress]
                           ) -> dict[IPAddress, AddressRecord]:
        """The rows of these addresses (free or not); addresses without a row are absent."""
        if not addresses:
            return {}
        rows = await self.sql.rows(
            f"SELECT {_COLUMNS} FROM addresses a JOIN pools p ON p.id = a.pool_id "
            "WHERE a.address = ANY(CAST(:addrs AS inet[]))",
            {"addrs": [str(a) for a in addresses]})
        records = (to_record(r) for r in rows)
        return {rec.address: rec for rec in records}

    async def range_counts(self) -> dict[tuple[int, int], dict[str, int]]:
        """(pool id, first address of the range as int) -> {state: count} of taken rows."""
        rows = await self.sql.rows(
            'SELECT r.pool_id, r."first", a.state, count(*) AS n FROM ranges r '
            "JOIN addresses a ON a.pool_id = r.pool_id "
            'AND a.address BETWEEN r."first" AND r."last" '
            "WHERE a.state <> 'free' GROUP BY r.pool_id, r.\"first\", a.state")
        out: dict[tuple[int, int], dict[str, int]] = {}
        for r in rows:
            key = (r["pool_id"], int(ipaddress.ip_interface(str(r["first"])).ip))
            out.setdefault(key, {})[r["state"]] = r["n"]
        return out

    async def galaxy_page(self, flt: GalaxyFilter, order: str, offset: int, limit: int
                          ) -> GalaxyPage:
        """One page of galaxy's listing of taken addresses; ``order`` is a ``GALAXY_ORDERS``."""
        values = (flt.keyword, flt.namespace, flt.app_name, flt.pod_name, flt.pool_name,
                  flt.app_type)
        if any("\x00" in v for v in values if v):
            # PostgreSQL's text cannot hold NUL: no stored name equals or contains one.
            return GalaxyPage(0, [])
        keyword = flt.keyword or None
        fields = {"namespace": flt.namespace, "app": flt.app_name, "pod": flt.pod_name,
                  "pool": flt.pool_name, "type": flt.app_type}
        params: dict[str, Any] = {k: None if keyword else v or None for k, v in fields.items()}
        params.update(keyword=keyword, offset=offset, limit=limit)
        rows = await self.sql.rows(
            _GALAXY_FIELDS.format(columns=_COLUMNS, order=_GALAXY_ORDERS[order]), params)
        total = rows[0]["total"] if rows else 0
        return GalaxyPage(total, [to_record(r) for r in rows if r["id"] is not None])

    async def taken(self) -> list[AddressRecord]:
        """Every address that is not free, in address order (galaxy's listing filters these)."""
        rows = await self.sql.rows(
            f"SELECT {_COLUMNS} FROM addresses a JOIN pools p ON p.id = a.pool_id "
            "WHERE a.state <> 'free' ORDER BY a.address")
        return [to_record(r) for r in rows]


def _named(row: Row) -> NamedPool:
    return NamedPool(row["name"], row["size"], row["pre_allocate_ip"], row["updated_at"])


class NamedPoolQuery:
    """galaxy's named pools: ``name -> (size, preAllocateIP)``."""

    def __init__(self, sql: Sql) -> None:
        self.sql = sql

    async def get(self, name: str, *, lock: bool = False) -> NamedPool | None:
        suffix = " FOR UPDATE" if lock else ""
        row = await self.sql.row(
            "SELECT name, size, pre_allocate_ip, updated_at FROM named_pools "
            f"WHERE name = :n{suffix}", {"n": name})
        return _named(row) if row is not None else None

    async def upsert(self, name: str, size: int, pre_allocate_ip: bool) -> NamedPool:
        row = await self.sql.row(
            "INSERT INTO named_pools (name, size, pre_allocate_ip) VALUES (:n, :s, :p) "
            "ON CONFLICT (name) DO UPDATE SET size = EXCLUDED.size, "
            "pre_allocate_ip = EXCLUDED.pre_allocate_ip, updated_at = now() "
            "RETURNING name, size, pre_allocate_ip, updated_at",
            {"n": name, "s": size, "p": pre_allocate_ip})
        assert row is not None
        return _named(row)

    async def delete(self, name: str) -> bool:
        return await self.sql.execute(
            "DELETE FROM named_pools WHERE name = :n", {"n": name}) > 0
