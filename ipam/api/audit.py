"""The audit trail, read-only: every state change with who, what, before/after, when, why."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from ipam.api.auth import Reader
from ipam.api.deps import RuntimeDep
from ipam.api.errors import error_responses
from ipam.api.operators import IP_SCHEMA, parse_address
from ipam.services.audit_query import query_audit
from ipam.storage.records import AuditRecord

router = APIRouter(prefix="/v1", tags=["audit"])

Text = Annotated[str | None, Query(max_length=512)]


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str = Field(description="scheduler, reconciler, operator:<token>, cni:<token>, "
                                   "config:<file>, ...")
    action: str = Field(description="allocate, reuse, release, keep, quarantine, reserve, "
                                    "preallocate, cni.del, pools.import, pool.set, "
                                    "pool.delete, ...")
    address: str | None
    pool: str | None
    owner: str | None
    pod_namespace: str | None
    pod_name: str | None
    pod_uid: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reason: str | None
    request_id: str | None


class AuditList(BaseModel):
    items: list[AuditOut] = Field(description="Newest first")
    next_cursor: str | None


def _out(record: AuditRecord) -> AuditOut:
    e = record.entry
    return AuditOut(
        id=record.id, at=record.at, actor=e.actor, action=e.action,
        address=str(e.address) if e.address is not None else None, pool=e.pool,
        owner=e.owner_key, pod_namespace=e.pod_namespace, pod_name=e.pod_name,
        pod_uid=e.pod_uid, before=e.before, after=e.after, reason=e.reason,
        request_id=e.request_id)


@router.get("/audit", response_model=AuditList, responses=error_responses(401, 403, 422, 503))
async def list_audit(
    runtime: RuntimeDep, _: Reader,
    address: Annotated[str | None, Query(max_length=64, json_schema_extra=IP_SCHEMA)] = None,
    namespace: Text = None,
    pod: Annotated[str | None, Query(max_length=253, description="Pod name")] = None,
    pod_uid: Text = None,
    owner: Text = None,
    actor: Text = None,
    action: Text = None,
    since: Annotated[datetime | None, Query(description="Inclusive; UTC if no zone")] = None,
    until: Annotated[datetime | None, Query(description="Exclusive; UTC if no zone")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> AuditList:
    """Audit rows matching every given filter, newest first, by keyset pages."""
    page = await query_audit(
        runtime.db,
        address=str(parse_address(address)) if address is not None else None,
        namespace=namespace, pod=pod, pod_uid=pod_uid, owner=owner, actor=actor, action=action,
        since=since, until=until, limit=limit, cursor=cursor)
    return AuditList(items=[_out(r) for r in page.items], next_cursor=page.next_cursor)
