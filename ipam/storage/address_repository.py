"""All SQL on ``addresses``. Allocation is one UPDATE over ``FOR UPDATE SKIP LOCKED``.

The free-row lookup walks the partial index ``ix_addresses_free (pool_id, address)`` in
order, so concurrent allocators skip each other's locked rows instead of queueing, and the
lowest free address goes first. Callers must treat "no row" as "retry or materialise", never
as exhaustion by itself (see TRAPS.md: SKIP LOCKED can return nothing under contention).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson

from ipam.engine.ip_ranges import IPAddress
from ipam.storage.audit_repository import insert_audit
from ipam.storage.records import AddressRecord, Holder, inet_address
from ipam.storage.sql import Row, Sql

_COLUMNS = """
    a.id, a.pool_id, p.name AS pool, a.address, masklen(p.subnet) AS prefix_length,
    p.gateway, p.vlan, a.state, a.owner_key, a.policy, a.pod_namespace, a.pod_name, a.pod_uid,
    a.node, a.slot, a.kept_ttl_seconds, a.note, a.allocated_at, a.kept_since, a.updated_at,
    a.quarantined_until
"""

_HOLDER_SET = """
    state = :state, owner_key = :owner_key, policy = :policy, pod_namespace = :pod_namespace,
    pod_name = :pod_name, pod_uid = :pod_uid, node = :node, slot = :slot,
    kept_ttl_seconds = :kept_ttl_seconds, note = :note,
    allocated_at = CASE WHEN :state = 'allocated' THEN now() ELSE a.allocated_at END,
    kept_since = CASE WHEN :state = 'kept' THEN now() ELSE NULL END,
    quarantined_until = NULL, updated_at = now()
"""

#: The pool's lowest free row nobody holds, through ``ix_addresses_free (pool_id, address)``.
#: Written as ``pool_id = :pool_id ... ORDER BY address``, the planner walked the unique
#: address index instead and filtered out every taken row on the way (5,000 taken rows: 102
#: buffers and 0.7-5 ms per allocation, against 4 buffers). A range on pool_id is not an
#: equality, so ``ORDER BY pool_id, address`` stays and only the partial index provides it.
_LOWEST_FREE = """
    SELECT id FROM addresses
    WHERE pool_id BETWEEN :pool_id AND :pool_id AND state = 'free'
    ORDER BY pool_id, address
    LIMIT 1
    FOR UPDATE SKIP LOCKED
"""

_TAKE_FREE = f"""
    UPDATE addresses a SET {_HOLDER_SET}
    FROM pools p
    WHERE p.id = a.pool_id AND a.state = 'free' AND a.id = ({_LOWEST_FREE})
    RETURNING {_COLUMNS}
"""

#: What a pod holds, plus what its owner ``:k`` holds (``NULL``: no owner to look at).
_HELD = f"""
    SELECT {_COLUMNS} FROM addresses a JOIN pools p ON p.id = a.pool_id
    WHERE a.pod_uid = :pod_uid OR (CAST(:k AS text) IS NOT NULL AND a.owner_key = :k)
"""

#: The audit row of the address ``taken`` below, written by the same statement.
_LOG_TAKEN = insert_audit("""
        SELECT :actor, 'allocate', t.address, t.pool, t.owner_key, t.pod_namespace,
               t.pod_name, t.pod_uid, CAST(NULL AS jsonb), CAST(:after AS jsonb), NULL,
               :request_id
        FROM taken t""")

#: The common bind in one round trip (``held_or_take``).
_HELD_OR_TAKE = f"""
    WITH held AS ({_HELD}),
    taken AS (
        UPDATE addresses a SET {_HOLDER_SET}
        FROM pools p
        WHERE p.id = a.pool_id AND a.state = 'free' AND a.id = ({_LOWEST_FREE}) AND NOT EXISTS (
            SELECT 1 FROM held h
            WHERE h.pod_uid = :pod_uid OR h.state IN ('kept', 'quarantined') OR NOT :plain_owner
        )
        RETURNING {_COLUMNS}
    ),
    logged AS ({_LOG_TAKEN}
    )
    SELECT true AS taken, * FROM taken
    UNION ALL
    SELECT false, * FROM held
    ORDER BY taken DESC, slot, address
"""

_TAKE_FREE_IN_RANGE = f"""
    UPDATE addresses a SET {_HOLDER_SET}
    FROM pools p
    WHERE p.id = a.pool_id AND a.state = 'free' AND a.id = (
        SELECT id FROM addresses
        WHERE pool_id BETWEEN :pool_id AND :pool_id AND state = 'free'
          AND address BETWEEN CAST(:first AS inet) AND CAST(:last AS inet)
        ORDER BY pool_id, address
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    RETURNING {_COLUMNS}
"""

_CHANGE = f"""
    UPDATE addresses a SET {_HOLDER_SET}
    FROM pools p
    WHERE p.id = a.pool_id AND a.id = :id
    RETURNING {_COLUMNS}
"""

_FREE_SET = """
    state = 'free', owner_key = NULL, policy = NULL, pod_namespace = NULL, pod_name = NULL,
    pod_uid = NULL, node = NULL, slot = 0, kept_ttl_seconds = NULL, note = NULL,
    kept_since = NULL, quarantined_until = NULL, updated_at = now()
"""

_FREE = f"""
    UPDATE addresses a SET {_FREE_SET}
    FROM pools p
    WHERE p.id = a.pool_id AND a.id = :id
    RETURNING {_COLUMNS}
"""

#: A release: quarantined until the last use plus the pool's period (its
#: ``quarantine_seconds``, else ``:default``), or free at once when that time has passed. The
#: last use is now for an allocated row, ``kept_since`` for a row kept when its pod left (one
#: with a pod name; a named pool's pre-allocated row had no pod since it was free); a reserved
#: or an already quarantined row (an operator ending it early) is freed. The quarantined row
#: keeps its owner (the same owner may take it back at once) and its last pod's name.
_RELEASE = f"""
    WITH r AS (
        SELECT a.id, CASE WHEN a.state = 'allocated' THEN now()
                          WHEN a.state = 'kept' AND a.pod_name IS NOT NULL
                              THEN coalesce(a.kept_since, now()) END
                     + coalesce(p.quarantine_seconds, CAST(:default AS integer))
                       * interval '1 second' AS until
        FROM addresses a JOIN pools p ON p.id = a.pool_id
        WHERE a.id = :id
    ), q AS (
        SELECT id, CASE WHEN until > now() THEN until END AS until FROM r
    )
    UPDATE addresses a SET
        state = CASE WHEN q.until IS NULL THEN 'free' ELSE 'quarantined' END,
        owner_key = CASE WHEN q.until IS NOT NULL THEN a.owner_key END,
        policy = CASE WHEN q.until IS NOT NULL THEN a.policy END,
        pod_namespace = CASE WHEN q.until IS NOT NULL THEN a.pod_namespace END,
        pod_name = CASE WHEN q.until IS NOT NULL THEN a.pod_name END,
        slot = CASE WHEN q.until IS NOT NULL THEN a.slot ELSE 0 END,
        pod_uid = NULL, node = NULL, kept_ttl_seconds = NULL, note = NULL, kept_since = NULL,
        quarantined_until = q.until, updated_at = now()
    FROM pools p, q
    WHERE p.id = a.pool_id AND a.id = q.id
    RETURNING {_COLUMNS}
"""

#: Quarantined rows whose time is up, oldest end first; ``{pool}`` narrows to one pool.
_QUARANTINE_OVER = f"""
    SELECT {_COLUMNS} FROM addresses a JOIN pools p ON p.id = a.pool_id
    WHERE a.state = 'quarantined' AND a.quarantined_until <= now() {{pool}}
    ORDER BY a.quarantined_until, a.id
    LIMIT :n
"""


def _holder_params(holder: Holder) -> dict[str, Any]:
    return {
        "state": holder.state,
        "owner_key": holder.owner_key,
        "policy": holder.policy,
        "pod_namespace": holder.pod_namespace,
        "pod_name": holder.pod_name,
        "pod_uid": holder.pod_uid,
        "node": holder.node,
        "slot": holder.slot,
        "kept_ttl_seconds": holder.kept_ttl_seconds,
        "note": holder.note,
    }


def to_record(m: Row) -> AddressRecord:
    gateway = m["gateway"]
    return AddressRecord(
        id=m["id"], pool_id=m["pool_id"], pool=m["pool"], address=inet_address(m["address"]),
        prefix_length=m["prefix_length"],
        gateway=inet_address(gateway) if gateway is not None else None,
        vlan=m["vlan"], state=m["state"], owner_key=m["owner_key"], policy=m["policy"],
        pod_namespace=m["pod_namespace"], pod_name=m["pod_name"], pod_uid=m["pod_uid"],
        node=m["node"], slot=m["slot"], kept_ttl_seconds=m["kept_ttl_seconds"], note=m["note"],
        allocated_at=m["allocated_at"], kept_since=m["kept_since"], updated_at=m["updated_at"],
        quarantined_until=m["quarantined_until"],
    )


class AddressRepository:
    def __init__(self, sql: Sql) -> None:
        self.sql = sql

    async def _one(self, sql: str, params: dict[str, Any]) -> AddressRecord | None:
        row = await self.sql.row(sql, params)
        return to_record(row) if row is not None else None

    async def _many(self, sql: str, params: dict[str, Any]) -> list[AddressRecord]:
        return [to_record(r) for r in await self.sql.rows(sql, params)]

    # -- reads ---------------------------------------------------------------------------
    async def by_pod_uid(self, uid: str, *, lock: bool = False) -> list[AddressRecord]:
        suffix = " FOR UPDATE OF a" if lock else ""
        return await self._many(
            f"SELECT {_COLUMNS} FROM addresses a JOIN pools p ON p.id = a.pool_id "
            f"WHERE a.pod_uid = :uid ORDER BY a.slot{suffix}", {"uid": uid})

    async def by_pod(self, namespace: str, name: str) -> list[AddressRecord]:
        """Addresses a live pod holds (not the ones kept from a previous pod of that name)."""
        return await self._many(
            f"SELECT {_COLUMNS} FROM addresses a JOIN pools p ON p.id = a.pool_id "
            "WHERE a.pod_namespace = :ns AND a.pod_name = :name AND a.state = 'allocated' "
            "ORDER BY a.slot", {"ns": namespace, "name": name})

    async def held_for(self, uid: str, owner_key: str | None) -> list[AddressRecord]:
        """What a pod already holds, plus what its owner keeps (one round trip for filter)."""
        return await self._many(f"{_HELD} ORDER BY a.slot, a.address",
                                {"pod_uid": uid, "k": owner_key})

    async def held_or_take(self, owner_key: str | None, pool_id: int, holder: Holder, *,
                           plain_owner: bool, actor: str, request_id: str | None
                           ) -> tuple[list[AddressRecord], AddressRecord | None]:
        """``held_for``, and in the same statement ``take_free`` with its audit row, when what
        is held cannot change the decision: the pod holds nothing, its owner keeps nothing,
        and (unless ``plain_owner``) the owner holds nothing at all. Otherwise nothing is
        taken and the caller decides from the rows it got back, as it would have anyway.

        The audit row is the one ``services.allocation.audit_entry`` makes for a fresh
        allocation; tests/services compare the two.
        """
        rows = await self.sql.rows(_HELD_OR_TAKE, {
            "k": owner_key, "pool_id": pool_id, "plain_owner": plain_owner, "actor": actor,
            "request_id": request_id, "after": orjson.dumps(holder.snapshot()).decode(),
            **_holder_params(holder)})
        taken = to_record(rows[0]) if rows and rows[0]["taken"] else None
        return [to_record(r) for r in rows if not r["taken"]], taken

    async def by_owner(self, owner_key: str, *, prefix: bool = False,
                       quarantined: bool = False) -> list[AddressRecord]:
        """The owner's rows; quarantined ones only when asked (they are released: the owner
        key is who may take them back, not who holds them)."""
        cond = "a.owner_key LIKE :k" if prefix else "a.owner_key = :k"
        if not quarantined:
            cond += " AND a.state <> 'quarantined'"
        key = owner_key.replace("%", r"\%").replace("_", r"\_") + "%" if prefix else owner_key
        return await self._many(
            f"SELECT {_COLUMNS} FROM addresses a JOIN pools p ON p.id = a.pool_id "
            f"WHERE {cond} ORDER BY a.address", {"k": key})

    async def by_address(self, address: IPAddress, *, lock: bool = False
                         ) -> AddressRecord | None:
        suffix = " FOR UPDATE OF a" if lock else ""
        return await self._one((
            f"SELECT {_COLUMNS} FROM addresses a JOIN pools p ON p.id = a.pool_id "
            f"WHERE a.address = CAST(:addr AS inet){suffix}"), {"addr": str(address)})

    async def kept_for_owner(self, owner_key: str, pool_ids: Sequence[int], *,
                             states: Sequence[str] = ("kept",)) -> AddressRecord | None:
        """Lock one address of the owner in these states and pools: kept before quarantined,
        then lowest first."""
        return await self._one((
            f"SELECT {_COLUMNS} FROM addresses a JOIN pools p ON p.id = a.pool_id "
            "WHERE a.owner_key = :k AND a.state = ANY(:states) AND a.pool_id = ANY(:pools) "
            "ORDER BY a.state <> 'kept', p.position, a.address "
            "LIMIT 1 FOR UPDATE OF a SKIP LOCKED"),
            {"k": owner_key, "states": list(states), "pools": list(pool_ids)})

    async def taken_counts(self, pool_id: int | None = None) -> dict[int, dict[str, int]]:
        """Per pool, how many rows are allocated/kept/reserved (free rows are not counted)."""
        rows = await self.sql.rows(
            "SELECT pool_id, state, count(*) AS n FROM addresses WHERE state <> 'free' "
            "AND (CAST(:p AS integer) IS NULL OR pool_id = :p) GROUP BY pool_id, state",
            {"p": pool_id})
        out: dict[int, dict[str, int]] = {}
        for r in rows:
            out.setdefault(r["pool_id"], {})[r["state"]] = r["n"]
        return out

    async def now(self) -> datetime:
        """The database's clock: ages are compared with timestamps it wrote."""
        value = await self.sql.scalar("SELECT now()")
        assert isinstance(value, datetime)
        return value

    async def owned_pods(self, owner_key: str) -> int:
        """How many pods' worth of addresses an owner holds (allocated or kept, slot 0)."""
        count = await self.sql.scalar((
            "SELECT count(*) FROM addresses WHERE owner_key = :k AND slot = 0 "
            "AND state IN ('allocated', 'kept')"), {"k": owner_key})
        return int(count or 0)

    async def touch_pod(self, uid: str) -> None:
        """Mark a pod's rows as just used (a bind in flight), so the reconciler leaves them."""
        await self.sql.execute(
            "UPDATE addresses SET updated_at = now() WHERE pod_uid = :uid", {"uid": uid})

    async def has_free(self, pool_id: int) -> bool:
        """Any committed free row, locked or not (SKIP LOCKED alone cannot tell)."""
        found = await self.sql.scalar((
            "SELECT EXISTS (SELECT 1 FROM addresses WHERE pool_id = :p AND state = 'free')"),
            {"p": pool_id})
        return bool(found)

    async def unlocked_free(self, pool_id: int, limit: int) -> int:
        """How many free rows nobody holds locked, counting up to ``limit``."""
        found = await self.sql.scalar((
            "SELECT count(*) FROM (SELECT id FROM addresses WHERE pool_id = :p "
            "AND state = 'free' LIMIT :n FOR UPDATE SKIP LOCKED) s"),
            {"p": pool_id, "n": limit})
        return int(found or 0)

    async def blocked_in_range(self, pool_id: int, first: IPAddress, last: IPAddress,
                               uid: str, owner_key: str | None) -> int:
        """Addresses of ``[first, last]`` this pod cannot take: in use, except what the pod
        holds itself or its owner keeps. Rows are lazy, so a missing row is a free address."""
        value = await self.sql.scalar(
            "SELECT count(*) FROM addresses WHERE pool_id = :p AND state <> 'free' "
            "AND address BETWEEN CAST(:f AS inet) AND CAST(:l AS inet) "
            "AND pod_uid IS DISTINCT FROM :uid "
            "AND NOT (state IN ('kept', 'quarantined') AND owner_key IS NOT DISTINCT FROM :k) "
            "AND NOT (state = 'quarantined' AND quarantined_until <= now())",
            {"p": pool_id, "f": str(first), "l": str(last), "uid": uid, "k": owner_key})
        return int(value or 0)

    # -- writes --------------------------------------------------------------------------
    async def take_free(self, pool_id: int, holder: Holder) -> AddressRecord | None:
        return await self._one(_TAKE_FREE, {"pool_id": pool_id, **_holder_params(holder)})

    async def take_free_in_range(self, pool_id: int, first: IPAddress, last: IPAddress,
                                 holder: Holder) -> AddressRecord | None:
        return await self._one(_TAKE_FREE_IN_RANGE, {
            "pool_id": pool_id, "first": str(first), "last": str(last),
            **_holder_params(holder)})

    async def change(self, row_id: int, holder: Holder) -> AddressRecord:
        record = await self._one(_CHANGE, {"id": row_id, **_holder_params(holder)})
        assert record is not None, f"address row {row_id} vanished inside its transaction"
        return record

    async def free(self, row_id: int) -> AddressRecord:
        """Free at once: for rows no pod used (a refused bind's reservation, a quarantine
        that is over)."""
        record = await self._one(_FREE, {"id": row_id})
        assert record is not None, f"address row {row_id} vanished inside its transaction"
        return record

    async def release(self, row_id: int, default_seconds: int) -> AddressRecord:
        """Free after a pod used the row: quarantined (``_RELEASE``) or free."""
        record = await self._one(_RELEASE, {"id": row_id, "default": default_seconds})
        assert record is not None, f"address row {row_id} vanished inside its transaction"
        return record

    async def quarantine_over(self, pool_id: int | None, limit: int, *, lock: bool = True
                              ) -> list[AddressRecord]:
        """Quarantined rows whose time is up (one pool, or all), oldest end first; with
        ``lock``, locked for this transaction, skipping rows others hold."""
        sql = _QUARANTINE_OVER.format(
            pool="AND a.pool_id = :p" if pool_id is not None else "")
        if lock:
            sql += " FOR UPDATE OF a SKIP LOCKED"
        params: dict[str, Any] = {"n": limit}
        if pool_id is not None:
            params["p"] = pool_id
        return await self._many(sql, params)

    async def quarantine_over_count(self, pool_id: int) -> int:
        """How many of the pool's quarantined rows are past their end (taken, but not for
        long: the next allocation that needs them frees them)."""
        value = await self.sql.scalar(
            "SELECT count(*) FROM addresses WHERE pool_id = :p AND state = 'quarantined' "
            "AND quarantined_until <= now()", {"p": pool_id})
        return int(value or 0)

    async def materialize(self, pool_id: int, values: Iterable[IPAddress]) -> int:
        """Insert free rows for these addresses; existing ones are left as they are."""
        addrs = [str(v) for v in values]
        if not addrs:
            return 0
        return await self.sql.execute(
            "INSERT INTO addresses (pool_id, address) "
            "SELECT :p, unnest(CAST(:addrs AS inet[])) ON CONFLICT (address) DO NOTHING",
            {"p": pool_id, "addrs": addrs})

    async def delete_free(self, row_ids: Sequence[int]) -> None:
        """Delete rows nobody holds: free, or released and cooling down."""
        if row_ids:
            await self.sql.execute(
                "DELETE FROM addresses WHERE id = ANY(:ids) "
                "AND state IN ('free', 'quarantined')", {"ids": list(row_ids)})
