"""Pool usage over time and per node subnet, for the console's pool tree (read-only).

``GET /v1/usage/trend``: how many addresses each pool had taken at evenly spaced instants of
the last hours or days. Nothing stores usage history: it is rebuilt from the audit trail,
which already records every address change with its state before and after. Starting from
the counts now, the audit rows of the window are walked newest first and each change is
undone, which gives the counts just before it. The walk reads at most ``MAX_ROWS`` rows; a
busier window comes back with the instants before the oldest row read as ``null`` (unknown)
and ``complete: false``, rather than a slow answer or a made-up curve.

``GET /v1/usage/node-subnets``: per pool and node subnet it is routable from, the nodes known
in that subnet and the addresses allocated to pods on them (the third level of the tree).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from ipam.api.auth import Reader
from ipam.api.deps import RuntimeDep
from ipam.api.errors import error_responses
from ipam.services.address_reads import AddressReads
from ipam.services.audit_query import MAX_LIMIT, query_audit
from ipam.services.pool_usage import PoolUsageReads
from ipam.services.runtime import Runtime
from ipam.storage.records import AuditRecord

router = APIRouter(prefix="/v1/usage", tags=["usage"])

#: Audit rows one trend request reads at most.
MAX_ROWS = 50_000
#: The states that count as taken, in the order the counts are reported.
TAKEN = ("allocated", "kept", "reserved")


class TrendPoint(BaseModel):
    at: datetime
    used: int | None = Field(description="allocated + kept + reserved; null: before the "
                                         "oldest audit row read")
    allocated: int | None
    kept: int | None
    reserved: int | None


class PoolTrend(BaseModel):
    name: str
    total: int = Field(description="The pool's size now")
    points: list[TrendPoint] = Field(description="Oldest first; the last one is now")


class TrendOut(BaseModel):
    since: datetime
    until: datetime
    step_seconds: float
    complete: bool = Field(description="false: the window had more than the rows read; "
                                       "points before `known_since` are null")
    known_since: datetime | None = Field(description="Oldest instant the counts are known at")
    rows_read: int
    pools: list[PoolTrend]


@dataclass(slots=True)
class _Counts:
    values: dict[str, int]

    def undo(self, before: object, after: object) -> None:
        """Step back over one change: the row leaves its ``after`` state for ``before``."""
        was, now = _state(before), _state(after)
        if was == now:
            return
        if now in self.values:
            self.values[now] -= 1
        if was in self.values:
            self.values[was] += 1


def _state(snapshot: object) -> str:
    if isinstance(snapshot, dict):
        state = snapshot.get("state")
        if isinstance(state, str):
            return state
    return "free"


def instants(until: datetime, window: timedelta, points: int) -> list[datetime]:
    """``points`` instants evenly spaced over the window, oldest first, ending at ``until``."""
    step = window / (points - 1)
    return [until - step * (points - 1 - i) for i in range(points)]


def rebuild(current: dict[str, dict[str, int]], rows: Iterable[AuditRecord],
            at: Sequence[datetime], *, complete: bool
            ) -> tuple[dict[str, list[dict[str, int] | None]], datetime | None]:
    """Counts per pool at each instant of ``at`` (oldest first), from the counts now and the
    audit rows newer than ``at[0]``, newest first. With ``complete`` false the instants
    older than the last row given are unknown (``None``)."""
    running = {pool: _Counts(dict(values)) for pool, values in current.items()}
    out: dict[str, list[dict[str, int] | None]] = {pool: [None] * len(at) for pool in current}
    j = len(at) - 1
    oldest: datetime | None = None

    def emit(index: int) -> None:
        for pool, counts in running.items():
            out[pool][index] = dict(counts.values)

    for record in rows:
        while j >= 0 and at[j] >= record.at:
            emit(j)
            j -= 1
        oldest = record.at
        entry = record.entry
        counts = running.get(entry.pool) if entry.pool is not None else None
        if counts is not None and entry.address is not None:
            counts.undo(entry.before, entry.after)
    if complete:
        while j >= 0:
            emit(j)
            j -= 1
        return out, at[0]
    return out, at[j + 1] if j + 1 < len(at) else oldest


async def _audit_rows(runtime: Runtime, since: datetime) -> tuple[list[AuditRecord], bool]:
    """Rows since then, newest first, at most ``MAX_ROWS``, and whether that was all."""
    db = runtime.db
    rows: list[AuditRecord] = []
    cursor: str | None = None
    while len(rows) < MAX_ROWS:
        page = await query_audit(db, since=since, cursor=cursor,
                                 limit=min(MAX_LIMIT, MAX_ROWS - len(rows)))
        rows.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return rows, True
    return rows, False


@router.get("/trend", response_model=TrendOut, responses=error_responses(401, 403, 422, 503))
async def usage_trend(
    runtime: RuntimeDep, _: Reader,
    hours: Annotated[float, Query(gt=0, le=24 * 31, description="Window, in hours")] = 24,
    points: Annotated[int, Query(ge=2, le=500, description="Instants in the window")] = 25,
) -> TrendOut:
    """Taken addresses per pool at evenly spaced instants, rebuilt from the audit trail."""
    # ``until`` before the counts: a change landing in between is newer than ``until`` and
    # is undone before the last instant is emitted, so the instants stay consistent.
    until = datetime.now(UTC)
    report = await PoolUsageReads(runtime).pool_usage_detail()
    window = timedelta(hours=hours)
    at = instants(until, window, points)
    current = {d.usage.pool.name: {"allocated": d.usage.allocated, "kept": d.usage.kept,
                                   "reserved": d.usage.reserved} for d in report.pools}
    totals = {d.usage.pool.name: d.usage.pool.size for d in report.pools}
    rows, complete = await _audit_rows(runtime, at[0])
    series, known = rebuild(current, rows, at, complete=complete)
    pools = []
    for name, values in series.items():
        trend_points = []
        for instant, counts in zip(at, values, strict=True):
            if counts is None:
                trend_points.append(TrendPoint(at=instant, used=None, allocated=None, kept=None,
                                               reserved=None))
            else:
                trend_points.append(TrendPoint(at=instant, used=sum(counts[s] for s in TAKEN),
                                               **{s: counts[s] for s in TAKEN}))
        pools.append(PoolTrend(name=name, total=totals[name], points=trend_points))
    return TrendOut(since=at[0], until=until, step_seconds=window.total_seconds() / (points - 1),
                    complete=complete, known_since=known, rows_read=len(rows),
                    pools=pools)


class NodeSubnetUsage(BaseModel):
    subnet: str
    nodes: int = Field(description="Nodes ipam knows with an InternalIP in this subnet")
    allocated: int = Field(description="The pool's addresses allocated to pods on those nodes")


class PoolNodeSubnets(BaseModel):
    pool: str
    node_subnets: list[NodeSubnetUsage]
    elsewhere: int = Field(description="Allocated to pods on nodes in none of the subnets, or "
                                       "on nodes ipam does not know (any more)")


class NodeSubnetsOut(BaseModel):
    items: list[PoolNodeSubnets] = Field(description="In config order")


@router.get("/node-subnets", response_model=NodeSubnetsOut,
            responses=error_responses(401, 403, 503))
async def node_subnet_usage(runtime: RuntimeDep, _: Reader) -> NodeSubnetsOut:
    """Per pool and routable node subnet: the nodes in it and the addresses used on them."""
    rt = runtime
    report = await PoolUsageReads(rt).pool_usage_detail()
    rows = await AddressReads(rt).taken()
    node_ips: dict[str, Any] = dict(rt.nodes.addresses())
    by_pool: dict[str, list[str | None]] = {}
    for row in rows:
        if row.state == "allocated":
            by_pool.setdefault(row.pool, []).append(row.node)
    items = []
    for detail in report.pools:
        pool = detail.usage.pool
        nets = list(pool.node_subnets)
        nodes = [0] * len(nets)
        for ip in node_ips.values():
            for i, net in enumerate(nets):
                if ip is not None and ip.version == net.version and ip in net:
                    nodes[i] += 1
        allocated = [0] * len(nets)
        elsewhere = 0
        for node in by_pool.get(pool.name, []):
            ip = node_ips.get(node) if node is not None else None
            hit = next((i for i, net in enumerate(nets)
                        if ip is not None and ip.version == net.version and ip in net), None)
            if hit is None:
                elsewhere += 1
            else:
                allocated[hit] += 1
        items.append(PoolNodeSubnets(pool=pool.name, elsewhere=elsewhere, node_subnets=[
            NodeSubnetUsage(subnet=str(net), nodes=nodes[i], allocated=allocated[i])
            for i, net in enumerate(nets)]))
    return NodeSubnetsOut(items=items)
