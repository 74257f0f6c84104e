"""Appends to the audit trail and reads it back, newest first, by keyset cursor."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from ipam.storage.records import AuditEntry, AuditRecord
from ipam.storage.sql import Sql


def insert_audit(rows: str) -> str:
    """The audit trail's one INSERT. ``rows`` (``VALUES ...`` or a ``SELECT``) gives the
    columns in this order; the common bind's statement (``address_repository``) embeds it
    with rows from its own ``UPDATE``, everything else writes through ``record``."""
    return f"""
    INSERT INTO audit (actor, action, address, pool, owner_key, pod_namespace, pod_name,
                       pod_uid, before, after, reason, request_id)
    {rows}"""


_INSERT = insert_audit("""
    VALUES (:actor, :action, CAST(:address AS inet), :pool, :owner_key, :pod_namespace,
            :pod_name, :pod_uid, CAST(:before AS jsonb), CAST(:after AS jsonb), :reason,
            :request_id)
""")


@dataclass(frozen=True, slots=True)
class AuditFilter:
    address: str | None = None
    pod_namespace: str | None = None
    pod_name: str | None = None
    pod_uid: str | None = None
    owner_key: str | None = None
    actor: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    #: Keyset cursor: only rows with ``id`` below this one (pages never skip or repeat).
    before_id: int | None = None


def _json(value: dict[str, Any] | None) -> str | None:
    return orjson.dumps(value).decode() if value is not None else None


class AuditRepository:
    def __init__(self, sql: Sql) -> None:
        self.sql = sql

    async def record(self, *entries: AuditEntry) -> None:
        if not entries:
            return
        await self.sql.execute_many(_INSERT, [
            {
                "actor": e.actor, "action": e.action,
                "address": str(e.address) if e.address is not None else None,
                "pool": e.pool, "owner_key": e.owner_key, "pod_namespace": e.pod_namespace,
                "pod_name": e.pod_name, "pod_uid": e.pod_uid, "before": _json(e.before),
                "after": _json(e.after), "reason": e.reason, "request_id": e.request_id,
            }
            for e in entries
        ])

    async def query(self, flt: AuditFilter, limit: int) -> list[AuditRecord]:
        where, params = ["TRUE"], {"limit": limit}
        simple = {"pod_namespace": flt.pod_namespace, "pod_name": flt.pod_name,
                  "pod_uid": flt.pod_uid, "owner_key": flt.owner_key, "actor": flt.actor,
                  "action": flt.action}
        for column, value in simple.items():
            if value is not None:
                where.append(f"{column} = :{column}")
                params[column] = value  # type: ignore[assignment]
        if flt.address is not None:
            where.append("address = CAST(:address AS inet)")
            params["address"] = flt.address  # type: ignore[assignment]
        if flt.since is not None:
            where.append("at >= :since")
            params["since"] = flt.since  # type: ignore[assignment]
        if flt.until is not None:
            where.append("at < :until")
            params["until"] = flt.until  # type: ignore[assignment]
        if flt.before_id is not None:
            where.append("id < :before_id")
            params["before_id"] = flt.before_id
        rows = await self.sql.rows(
            f"SELECT * FROM audit WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT :limit",
            params)
        out = []
        for m in rows:
            address = m["address"]
            if isinstance(address, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
                address = address.ip
            out.append(AuditRecord(m["id"], m["at"], AuditEntry(
                actor=m["actor"], action=m["action"], address=address, pool=m["pool"],
                owner_key=m["owner_key"], pod_namespace=m["pod_namespace"],
                pod_name=m["pod_name"], pod_uid=m["pod_uid"], before=m["before"],
                after=m["after"], reason=m["reason"], request_id=m["request_id"])))
        return out
