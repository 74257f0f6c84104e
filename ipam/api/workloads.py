"""Workloads that hold fixed addresses, and what their release policy will do with them.

``GET /v1/workloads`` groups the taken addresses by owner (StatefulSet, Deployment, other
controller, named pool, or a bare pod that keeps its address) and, for each, answers the
operator's question "if I delete or scale this down, do the addresses stay?". The answers
are not written here: each scenario is put to ``engine.release_decision.on_pod_gone``, the
rule the controllers apply, with the owner's replicas read from the API server, so the words
the console shows are the decision the service will take.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from ipam.api.auth import Reader
from ipam.api.deps import RuntimeDep
from ipam.api.errors import error_responses
from ipam.engine.release_decision import WorkloadState, on_pod_gone
from ipam.engine.release_policy import Owner, OwnerKind, ReleasePolicy, owner_from_key
from ipam.errors import IpamError
from ipam.services.address_reads import AddressReads
from ipam.services.runtime import Runtime
from ipam.storage.records import AddressRecord

router = APIRouter(prefix="/v1", tags=["workloads"])

Kind = Literal["statefulset", "deployment", "controller", "pool", "pod"]
_KINDS: dict[OwnerKind, Kind] = {
    OwnerKind.STATEFULSET: "statefulset", OwnerKind.DEPLOYMENT: "deployment",
    OwnerKind.CONTROLLER: "controller", OwnerKind.POOL: "pool", OwnerKind.POD: "pod"}
_PREFIXES = tuple(f"{k.value}/" for k in OwnerKind)
#: Owners whose replicas are read from the API server at once.
LOOKUPS_IN_FLIGHT = 8


class WorkloadAddress(BaseModel):
    address: str
    pool: str
    state: str
    owner: str = Field(description="The row's owner key (a StatefulSet's carries the ordinal)")
    ordinal: int | None
    pod: str | None = Field(description="namespace/name of the pod holding it, if any")
    node: str | None
    kept_since: datetime | None


class Outcome(BaseModel):
    event: str = Field(description="What the operator (or a controller) does")
    keep: bool = Field(description="true: the addresses stay with the owner; false: freed")
    reason: str = Field(description="The release rule's own words")


class WorkloadOut(BaseModel):
    key: str = Field(description="sts/ns/name, deploy/ns/name, ctrl/ns/Kind/name, pool/name "
                                 "or pod/ns/name")
    kind: Kind
    kind_label: str = Field(description="StatefulSet, Deployment, ReplicaSet, ..., named pool")
    namespace: str | None
    name: str
    policy: str = Field(description="never, immutable or pod-delete")
    replicas: int | None = Field(description="Desired replicas now; null: unknown or not "
                                             "applicable")
    exists: bool | None = Field(description="Whether the owner object exists; null: unknown")
    note: str | None = Field(description="Why replicas are unknown, when they are")
    kept_ttl_seconds: int | None
    addresses: list[WorkloadAddress]
    outcomes: list[Outcome] = Field(description="What happens to the addresses, per event")


class WorkloadList(BaseModel):
    items: list[WorkloadOut]
    total: int = Field(description="Workloads matching, before ``limit``")


@dataclass(slots=True)
class _Group:
    owner: Owner
    key: str
    rows: list[AddressRecord] = field(default_factory=list)


def _workload_of(row: AddressRecord) -> tuple[Owner, str] | None:
    """(owner, workload key) for a row held for a workload, else ``None``."""
    key = row.owner_key or ""
    if not key.startswith(_PREFIXES):
        return None  # reserved by an operator, or an unknown shape
    owner = owner_from_key(key)
    if owner.kind is not OwnerKind.POOL and row.policy not in ("never", "immutable"):
        return None  # freed with its pod: not a fixed address
    wkey = owner.workload_key.rstrip("/") if owner.kind is OwnerKind.STATEFULSET else owner.key
    return owner, wkey


def _policy(rows: Sequence[AddressRecord]) -> ReleasePolicy:
    values = [r.policy for r in rows if r.policy]
    for candidate in (ReleasePolicy.NEVER, ReleasePolicy.IMMUTABLE):
        if candidate.value in values:
            return candidate
    return ReleasePolicy.POD_DELETE


def outcomes(owner: Owner, policy: ReleasePolicy, replicas: int | None,
             rows: Sequence[AddressRecord]) -> list[Outcome]:
    """Each event an operator may cause, put to the release rule (``on_pod_gone``)."""
    owned = len(rows)
    out: list[Outcome] = []

    def ask(event: str, workload: WorkloadState | None, who: Owner = owner) -> None:
        decision = on_pod_gone(policy, who, workload, owned)
        out.append(Outcome(event=event, keep=decision.keep, reason=decision.reason))

    size = replicas if replicas is not None else owned
    if owner.kind is OwnerKind.POOL:
        ask("a pod of the pool is deleted, or its workload scaled down or deleted", None)
    elif owner.kind is OwnerKind.POD:
        ask(f"pod {owner.namespace}/{owner.name} is deleted", None)
    elif owner.kind is OwnerKind.STATEFULSET:
        ordinals = sorted({o.ordinal for o in (owner_from_key(r.owner_key or "") for r in rows)
                           if o.ordinal is not None})
        top = Owner(OwnerKind.STATEFULSET, owner.namespace, owner.name,
                    ordinals[-1] if ordinals else 0)
        assert top.ordinal is not None
        ask(f"pod {owner.name}-{top.ordinal} is deleted or evicted (re-created with the same "
            "name)", WorkloadState(max(size, top.ordinal + 1)), top)
        ask(f"scaled down to {top.ordinal} replicas (ordinal {top.ordinal} goes)",
            WorkloadState(top.ordinal), top)
        ask(f"StatefulSet {owner.namespace}/{owner.name} is deleted", None, top)
    else:
        what = "Deployment" if owner.kind is OwnerKind.DEPLOYMENT else owner.name.split("/")[0]
        ask("a pod is deleted (its replacement takes a kept address)", WorkloadState(size))
        if size > 1:
            ask(f"scaled down to {size - 1} replica{'' if size == 2 else 's'}",
                WorkloadState(size - 1))
        ask("scaled to 0 replicas", WorkloadState(0))
        ask(f"{what} is deleted", None)
    ttl = next((r.kept_ttl_seconds for r in rows if r.kept_ttl_seconds), None)
    if ttl is not None and owner.kind is not OwnerKind.POOL:
        out.append(Outcome(event=f"a kept address stays unused for {ttl} s", keep=False,
                           reason="freed by the reconciler (kept TTL, "
                                  "ipam.fixed-ip.io/kept-ttl-seconds)"))
    return out


def _label(owner: Owner) -> str:
    if owner.kind is OwnerKind.CONTROLLER:
        return owner.name.split("/", 1)[0]
    return {OwnerKind.STATEFULSET: "StatefulSet", OwnerKind.DEPLOYMENT: "Deployment",
            OwnerKind.POOL: "named pool", OwnerKind.POD: "Pod"}[owner.kind]


def _name(owner: Owner) -> str:
    return owner.name.split("/", 1)[1] if owner.kind is OwnerKind.CONTROLLER else owner.name


def _address(row: AddressRecord) -> WorkloadAddress:
    owner = owner_from_key(row.owner_key or "")
    pod = f"{row.pod_namespace}/{row.pod_name}" if row.pod_name else None
    return WorkloadAddress(address=str(row.address), pool=row.pool, state=row.state,
                           owner=row.owner_key or "", ordinal=owner.ordinal, pod=pod,
                           node=row.node, kept_since=row.kept_since)


async def _replicas(runtime: Runtime, owner: Owner, gate: asyncio.Semaphore
                    ) -> tuple[int | None, bool | None, str | None]:
    """(replicas, exists, note) from the API server, through the controllers' reader."""
    if owner.kind in (OwnerKind.POOL, OwnerKind.POD):
        return None, None, None
    reconciler = runtime.reconciler
    reader = reconciler.workloads if reconciler is not None else None
    if reader is None:
        return None, None, "controllers are off on this replica: replicas unknown"
    if owner.kind is OwnerKind.STATEFULSET:
        owner = Owner(OwnerKind.STATEFULSET, owner.namespace, owner.name, 0)
    async with gate:
        try:
            state = await reader.workload(owner)
        except IpamError as exc:
            return None, None, f"replicas unknown: {exc.message}"
    if state is None:
        return None, False, None
    if owner.kind is OwnerKind.CONTROLLER and not owner.name.startswith("ReplicaSet/"):
        return None, True, f"{_label(owner)} has no replica count"
    return state.replicas, True, None


@router.get("/workloads", response_model=WorkloadList,
            responses=error_responses(401, 403, 422, 503))
async def list_workloads(
    runtime: RuntimeDep, _: Reader,
    namespace: Annotated[str | None, Query(max_length=253)] = None,
    kind: Kind | None = None,
    search: Annotated[str | None, Query(max_length=253, description="Part of the owner key")]
    = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> WorkloadList:
    """Owners holding fixed addresses, by key, with their addresses and policy outcomes."""
    groups: dict[str, _Group] = {}
    for row in await AddressReads(runtime).taken():
        found = _workload_of(row)
        if found is None:
            continue
        owner, wkey = found
        if namespace is not None and owner.namespace != namespace:
            continue
        if kind is not None and _KINDS[owner.kind] != kind:
            continue
        if search and search not in wkey:
            continue
        group = groups.get(wkey)
        if group is None:
            group = groups[wkey] = _Group(owner, wkey)
        group.rows.append(row)
    chosen = [groups[k] for k in sorted(groups)][:limit]
    gate = asyncio.Semaphore(LOOKUPS_IN_FLIGHT)
    sizes = await asyncio.gather(*(_replicas(runtime, g.owner, gate) for g in chosen))
    items = []
    for group, (replicas, exists, note) in zip(chosen, sizes, strict=True):
        owner, rows = group.owner, sorted(group.rows, key=lambda r: (r.owner_key or "",
                                                                     r.address.version,
                                                                     int(r.address)))
        policy = _policy(rows)
        items.append(WorkloadOut(
            key=group.key, kind=_KINDS[owner.kind], kind_label=_label(owner),
            namespace=owner.namespace or None, name=_name(owner), policy=policy.value,
            replicas=replicas, exists=exists, note=note,
            kept_ttl_seconds=next((r.kept_ttl_seconds for r in rows if r.kept_ttl_seconds),
                                  None),
            addresses=[_address(r) for r in rows],
            outcomes=_gone(owner, policy, rows) if exists is False else
            outcomes(owner, policy, replicas, rows)))
    return WorkloadList(items=items, total=len(groups))


def _gone(owner: Owner, policy: ReleasePolicy, rows: Sequence[AddressRecord]) -> list[Outcome]:
    """The owner object is already deleted: what the controllers decide for its addresses."""
    decision = on_pod_gone(policy, owner, None, len(rows))
    return [Outcome(event=f"{_label(owner)} {owner.namespace}/{_name(owner)} no longer exists",
                    keep=decision.keep, reason=decision.reason)]
