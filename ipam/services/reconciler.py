"""One reconciliation pass: compare what PostgreSQL holds with the pods that exist.

It finds (and, when applying, repairs):

* ``pod_gone``: an address allocated to a pod UID that no longer exists (deleted while the
  watch was down, or its DELETED event was lost). Keyed on UID: a new pod with the same name
  is not the old one. Freed or kept by the pod's release policy.
* ``never_bound``: an address reserved at bind time for a pod that still has no node after
  the grace period (the process died between reservation and Binding). Freed.
* ``unknown_to_database``: a running pod whose galaxy annotation (or, without one, whose pod
  IP inside a pool) names an address PostgreSQL does not hold for it. Adopted when the
  address is free, reported otherwise: this is also how allocations move over from galaxy.
* ``kept_expired``: a kept address unused for longer than its TTL. Freed.
* ``owner_gone``: a kept address of an ``immutable`` owner that no longer exists. Freed.
* ``quarantine_over``: an address still quarantined after its quarantine ended (the sweep
  frees them every few seconds on the leader; one that stays is stuck). Freed.
* ``missing_resource``: a pod that names the fixed-IP network but does not request
  ``tke.cloud.tencent.com/eni-ip``, so the scheduler never sent it to us and its CNI will fail
  (galaxy says "neither ipInfo from cni args nor ipam type from netconf"). Reported only.

The database snapshot is taken before the pod list, so a row can only look orphaned if its pod
was gone when the list was taken; rows touched within the grace period are left alone. The
rows are streamed from that snapshot in batches and only the suspicious ones are kept, so a
pass over 100,000 allocations holds a batch of rows, not all of them, and yields to the event
loop between batches (the election-time pass runs while the service serves).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from ipam.engine.galaxy_args import annotated_addresses
from ipam.engine.ip_ranges import IPAddress
from ipam.engine.pod import ENI_IP_RESOURCE, NETWORKS_ANNOTATION, PodFacts
from ipam.engine.release_decision import WorkloadState, kept_expired
from ipam.engine.release_policy import OwnerKind, owner_from_key
from ipam.errors import IpamError
from ipam.services.allocation import Actor, Allocator
from ipam.services.placement_state import PoolCatalog
from ipam.services.pod_lifecycle import PodLifecycle, WorkloadReader
from ipam.settings import ReconcilerSettings
from ipam.storage.database import Database, HeldRow

log = logging.getLogger(__name__)
ACTOR = Actor("reconciler")


class PodLister(Protocol):
    async def list_pods(self) -> list[PodFacts]: ...


@dataclass(slots=True)
class Finding:
    kind: str
    address: str
    pod: str | None = None
    pod_uid: str | None = None
    owner: str | None = None
    action: str = "none"
    detail: str = ""


@dataclass(slots=True)
class Report:
    applied: bool
    started_at: str = ""
    duration_seconds: float = 0.0
    rows_seen: int = 0
    pods_seen: int = 0
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None

    @property
    def repairs(self) -> int:
        return sum(1 for f in self.findings if f.action not in ("none", "skipped"))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["repairs"] = self.repairs
        return out


@dataclass(slots=True)
class _Survey:
    """What one snapshot of the database showed, next to the pods listed after it."""

    now: datetime
    pods: list[PodFacts]
    #: ("pod_gone" | "never_bound" | "kept", row), in address order.
    suspects: list[tuple[str, HeldRow]] = field(default_factory=list)
    #: (pod UID, address) of the allocated rows of pods whose addresses ``_unknown`` checks.
    held: set[tuple[str, IPAddress]] = field(default_factory=set)


def _checks_addresses(pod: PodFacts) -> bool:
    """A pod whose addresses in use must be in the database (``unknown_to_database``)."""
    return (pod.node_name is not None and not pod.terminated and not pod.deleting
            and pod.managed)


def _text(row: HeldRow) -> str:
    """The address as Python writes it (PostgreSQL writes IPv4-mapped IPv6 differently)."""
    return str(ipaddress.ip_address(row.address))


def _addresses_in_use(pod: PodFacts, catalog: PoolCatalog) -> list[IPAddress]:
    """What a running pod uses: galaxy's ipinfos annotation, else its podIPs inside a pool
    (older galaxy versions kept allocations only in their CRD; the pod's IP is the truth)."""
    annotated = annotated_addresses(pod)
    if annotated:
        return annotated
    out = []
    for text in pod.pod_ips:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if any(address in r for p in catalog.pools for r in p.ranges):
            out.append(address)
    return out


class Reconciler:
    def __init__(self, db: Database, allocator: Allocator, lifecycle: PodLifecycle,
                 workloads: WorkloadReader, pods: PodLister, catalog: PoolCatalog,
                 settings: ReconcilerSettings) -> None:
        self.db = db
        self.allocator = allocator
        self.lifecycle = lifecycle
        self.workloads = workloads
        self.pods = pods
        self.catalog = catalog
        self.settings = settings
        self.last_report: Report | None = None
        self.runs = 0
        #: Repairs by finding kind over the process lifetime (a metric).
        self.repairs: dict[str, int] = {}

    async def run_pass(self, *, apply: bool) -> Report:
        report = Report(applied=apply, started_at=datetime.now(UTC).isoformat())
        began = time.monotonic()
        try:
            survey = await self._survey(report)
            await self._examine(report, survey, apply)
            await self._quarantine_over(report, apply)
        except IpamError as exc:
            report.error = exc.message
            log.warning("reconciler pass failed: %s", exc.message)
        except Exception as exc:  # e.g. a 403 on the pod list: the report says so, the
            # loop's supervisor counts it and retries; it must not end the loop
            report.error = f"{type(exc).__name__}: {exc}"
            log.exception("reconciler pass failed")
        report.duration_seconds = round(time.monotonic() - began, 4)
        for finding in report.findings:
            if finding.action not in ("none", "skipped", "conflict"):
                self.repairs[finding.kind] = self.repairs.get(finding.kind, 0) + 1
        self.last_report = report
        self.runs += 1
        return report

    async def _survey(self, report: Report) -> _Survey:
        """Stream the snapshot's rows against the pod list; keep only what needs a look."""
        async with self.db.snapshot() as snapshot:
            now = await snapshot.now()  # the snapshot is taken here, before the pod list
            pods = await self.pods.list_pods()
            survey = _Survey(now, pods)
            by_uid = {p.uid: p for p in pods}
            checked = {p.uid for p in pods if _checks_addresses(p)}
            grace = now - timedelta(seconds=self.settings.grace_seconds)
            unbound_grace = now - timedelta(seconds=self.settings.unbound_grace_seconds)
            done: set[str] = set()
            async for batch in snapshot.held_rows():
                report.rows_seen += len(batch)
                for row in batch:
                    uid = row.pod_uid
                    if row.state == "allocated" and uid:
                        if uid in checked:
                            survey.held.add((uid, ipaddress.ip_address(row.address)))
                        if uid in done:
                            continue
                        pod = by_uid.get(uid)
                        # A Failed/Succeeded pod is done with its address, like a gone one.
                        if (pod is None or pod.terminated) and row.updated_at < grace:
                            done.add(uid)
                            survey.suspects.append(("pod_gone", row))
                        elif (pod is not None and pod.node_name is None and not pod.deleting
                              and row.updated_at < unbound_grace):
                            done.add(uid)
                            survey.suspects.append(("never_bound", row))
                    elif row.state == "kept" and (row.policy == "immutable"
                                                  or row.kept_ttl_seconds is not None):
                        survey.suspects.append(("kept", row))
        report.pods_seen = len(pods)
        return survey

    async def _examine(self, report: Report, survey: _Survey, apply: bool) -> None:
        now = survey.now
        grace = now - timedelta(seconds=self.settings.grace_seconds)
        unbound_grace = now - timedelta(seconds=self.settings.unbound_grace_seconds)
        owners: dict[str, WorkloadState | bool | None] = {}
        for i, (kind, row) in enumerate(survey.suspects):
            if i % 500 == 499:
                await asyncio.sleep(0)  # without repairs (a check), nothing else would yield
            if kind == "pod_gone":
                await self._pod_gone(report, row, grace, apply)
            elif kind == "never_bound":
                await self._never_bound(report, row, unbound_grace, apply)
            else:
                await self._kept(report, row, now, owners, apply)
        await self._unknown(report, survey.held, survey.pods, apply)

    async def _pod_gone(self, report: Report, row: HeldRow, grace: datetime,
                        apply: bool) -> None:
        finding = Finding("pod_gone", _text(row), f"{row.pod_namespace}/{row.pod_name}",
                          row.pod_uid, row.owner_key)
        report.findings.append(finding)
        if not apply:
            return
        assert row.pod_uid is not None
        try:
            decision, changed = await self.lifecycle.pod_gone(row.pod_uid, actor=ACTOR,
                                                              stale_before=grace)
        except IpamError as exc:
            finding.action, finding.detail = "skipped", exc.message
            return
        if decision is None:
            finding.action, finding.detail = "skipped", "changed since the snapshot"
        else:
            finding.action = "kept" if decision.keep else "released"
            finding.detail = f"{decision.reason} ({len(changed)} address(es))"

    async def _never_bound(self, report: Report, row: HeldRow, stale: datetime,
                           apply: bool) -> None:
        finding = Finding("never_bound", _text(row), f"{row.pod_namespace}/{row.pod_name}",
                          row.pod_uid, row.owner_key,
                          detail="reserved at bind, but the pod has no node")
        report.findings.append(finding)
        if not apply:
            return
        assert row.pod_uid is not None
        released = await self.allocator.release_stale_unbound(row.pod_uid, stale, actor=ACTOR)
        finding.action = "released" if released else "skipped"

    async def _kept(self, report: Report, row: HeldRow, now: datetime,
                    owners: dict[str, WorkloadState | bool | None], apply: bool) -> None:
        """``owners``: workload key -> its state this pass (``True``: could not tell)."""
        key = row.owner_key or ""
        idle = (now - row.kept_since).total_seconds() if row.kept_since else 0.0
        kind, detail = "", ""
        if kept_expired(row.kept_ttl_seconds, idle):
            kind, detail = "kept_expired", f"kept {idle:.0f}s"
        elif row.policy == "immutable":
            owner = owner_from_key(key)
            if owner.kind in (OwnerKind.STATEFULSET, OwnerKind.DEPLOYMENT, OwnerKind.CONTROLLER):
                if owner.workload_key not in owners:
                    try:
                        owners[owner.workload_key] = await self.workloads.workload(owner)
                    except IpamError:
                        owners[owner.workload_key] = True  # cannot tell: keep
                state = owners[owner.workload_key]
                if state is None:
                    kind, detail = "owner_gone", "immutable owner deleted"
                elif (isinstance(state, WorkloadState) and owner.ordinal is not None
                      and owner.ordinal >= state.replicas):
                    # Kept while its pod was away, then the StatefulSet shrank past it.
                    kind, detail = "scaled_down", (f"ordinal {owner.ordinal} >= replicas "
                                                   f"{state.replicas} (policy immutable)")
        if not kind:
            return
        finding = Finding(kind, _text(row), owner=key, detail=detail)
        report.findings.append(finding)
        if apply:
            freed = await self.allocator.release_kept(ipaddress.ip_address(row.address), key,
                                                      actor=ACTOR, reason=finding.detail)
            finding.action = "released" if freed else "skipped"

    async def _quarantine_over(self, report: Report, apply: bool) -> None:
        rows = (await self.allocator.end_quarantines(actor=ACTOR) if apply else
                await self.allocator.quarantines_over())
        for row in rows:
            pod = f"{row.pod_namespace}/{row.pod_name}" if row.pod_name else None
            report.findings.append(Finding(
                "quarantine_over", str(row.address), pod, owner=row.owner_key,
                action="released" if apply else "none",
                detail=f"quarantined until {row.quarantined_until}, still not free"))

    async def _unknown(self, report: Report, held: set[tuple[str, IPAddress]],
                       pods: Sequence[PodFacts], apply: bool) -> None:
        for pod in pods:
            if pod.wants_fixed_ip_network and not pod.managed and not pod.terminated:
                report.findings.append(Finding(
                    "missing_resource", "", pod.key, pod.uid,
                    detail=f"annotates {NETWORKS_ANNOTATION}="
                           f"{pod.annotations.get(NETWORKS_ANNOTATION)!r} but requests no "
                           f"{ENI_IP_RESOURCE}; add '{ENI_IP_RESOURCE}: \"1\"' to the "
                           "container's resources.requests and resources.limits"))
            if not _checks_addresses(pod):
                continue
            for address in _addresses_in_use(pod, self.catalog):
                if (pod.uid, address) in held:
                    continue
                finding = Finding("unknown_to_database", str(address), pod.key, pod.uid,
                                  detail="the pod runs with it; PostgreSQL does not hold it")
                report.findings.append(finding)
                if not apply:
                    continue
                pool = next((p for p in self.catalog.pools if any(address in r for r in p.ranges)),
                            None)
                if pool is None:
                    finding.action, finding.detail = "skipped", "address is in no pool"
                    continue
                try:
                    await self.allocator.adopt(pod, address, pool, actor=ACTOR,
                                               reason="running pod's address was unknown")
                    finding.action = "adopted"
                except IpamError as exc:
                    finding.action, finding.detail = "conflict", exc.message
