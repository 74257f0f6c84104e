"""``GET /v1/refusals``: pods the extender is holding back now, with the reasons filter gave.

Reads the ring ``ipam.services.refusals`` keeps (this replica's filter calls that passed no
node). Each entry says whether the pod has got an address since, so a refusal the scheduler
already got past (a node freed up, the pool grew) reads as such rather than as a stuck pod.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from ipam.api.auth import Reader
from ipam.api.deps import RuntimeDep
from ipam.api.errors import error_responses
from ipam.services import refusals
from ipam.services.refusals import Refusal
from ipam.services.runtime import Runtime

router = APIRouter(prefix="/v1", tags=["refusals"])


class RefusalReason(BaseModel):
    reason: str = Field(description="The node's name or address is written `node …`")
    nodes: int = Field(description="Nodes refused for this reason in the latest call")
    examples: list[str] = Field(description="A few of those nodes")


class RefusalOut(BaseModel):
    pod: str = Field(description="namespace/name")
    uid: str
    first_at: datetime = Field(description="First refusal this replica remembers")
    last_at: datetime
    times: int = Field(description="Filter calls that passed no node")
    nodes: int = Field(description="Nodes refused in the latest call")
    reasons: list[RefusalReason] = Field(description="Most nodes first")
    other_nodes: int = Field(description="Nodes refused for reasons not listed")
    holds: list[str] = Field(description="Addresses the pod holds now")
    status: Literal["held back", "got an address"]


class RefusalList(BaseModel):
    items: list[RefusalOut] = Field(description="Latest refusal first")
    capacity: int = Field(description="Pods the ring remembers (per replica, since start)")


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


async def _out(runtime: Runtime, entry: Refusal) -> RefusalOut:
    rows = await runtime.allocator.pod_addresses(entry.uid)
    holds = [str(r.address) for r in rows]
    return RefusalOut(
        pod=entry.pod, uid=entry.uid, first_at=_at(entry.first_at), last_at=_at(entry.last_at),
        times=entry.times, nodes=entry.nodes, other_nodes=entry.other_nodes,
        reasons=[RefusalReason(reason=r, nodes=n, examples=list(e)) for r, n, e in entry.reasons],
        holds=holds,
        status="got an address" if holds else "held back")


@router.get("/refusals", response_model=RefusalList, responses=error_responses(401, 403, 422,
                                                                                503))
async def list_refusals(
    runtime: RuntimeDep, _: Reader,
    limit: Annotated[int, Query(ge=1, le=refusals.CAPACITY)] = 50,
    minutes: Annotated[float | None, Query(gt=0, le=7 * 24 * 60,
                                           description="Only refusals this recent")] = None,
) -> RefusalList:
    """The latest filter refusals on this replica, one per pod, newest first."""
    since = datetime.now(UTC).timestamp() - minutes * 60 if minutes is not None else None
    entries = refusals.recent(limit, since=since)
    items = await asyncio.gather(*(_out(runtime, e) for e in entries))
    return RefusalList(items=list(items), capacity=refusals.RECENT.capacity)
