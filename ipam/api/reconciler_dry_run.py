"""``GET /v1/reconciler/dry-run``: what ``ipam check --repair`` would do now, changing nothing.

The reconciler's pass with ``apply=False`` (the same code ``ipam check`` runs), on a twin of
this replica's reconciler, so the last real report (``GET /v1/reconciler/report``) and the
repair counters stay as they are. A pass reads every held row and lists every pod, so
concurrent callers share the pass in flight rather than start one each.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from ipam.api.auth import Reader
from ipam.api.deps import RuntimeDep, SharedDep
from ipam.api.errors import error_responses
from ipam.errors import Unavailable
from ipam.services.reconciler import Reconciler, Report

router = APIRouter(prefix="/v1", tags=["reconciler"])

#: What ``--repair`` does with each kind of finding (``services/reconciler.py``).
REPAIRS: dict[str, str] = {
    "pod_gone": "free or keep the address, as the pod's release policy says",
    "never_bound": "free the reservation",
    "unknown_to_database": "adopt the address for the running pod, if it is free",
    "kept_expired": "free the kept address",
    "owner_gone": "free the kept address",
    "scaled_down": "free the kept address",
    "quarantine_over": "free the address (its quarantine has ended)",
    "missing_resource": "nothing (report only): fix the pod's resources",
}


class FindingOut(BaseModel):
    kind: str
    address: str
    pod: str | None
    pod_uid: str | None
    owner: str | None
    action: str = Field(description="none: a dry run changes nothing")
    detail: str
    repair: str = Field(description="What --repair would do with it")


class DryRunOut(BaseModel):
    applied: bool = Field(description="Always false")
    started_at: str
    duration_seconds: float
    rows_seen: int
    pods_seen: int
    findings: list[FindingOut]
    repairs: int
    error: str | None


def _out(report: Report) -> DryRunOut:
    doc: dict[str, Any] = report.to_dict()
    findings = [FindingOut(**f, repair=REPAIRS.get(f["kind"], "see docs/design.md"))
                for f in doc.pop("findings")]
    return DryRunOut(**doc, findings=findings)


@router.get("/reconciler/dry-run", response_model=DryRunOut,
            responses=error_responses(401, 403, 503))
async def dry_run(runtime: RuntimeDep, shared: SharedDep, _: Reader) -> DryRunOut:
    """Run a reconciler pass that changes nothing; its findings and what --repair would do."""
    live = runtime.reconciler
    if live is None:
        raise Unavailable("the reconciler is off on this replica (no Kubernetes configuration, "
                          "or IPAM_CONTROLLERS_ENABLED=false); run `ipam check` instead")
    task = shared.dry_run
    if task is None or task.done():
        twin = Reconciler(live.db, live.allocator, live.lifecycle, live.workloads, live.pods,
                          live.catalog, live.settings)
        task = asyncio.create_task(twin.run_pass(apply=False), name="reconciler-dry-run")
        # Retrieved here too, so a pass whose caller went away leaves no unretrieved error.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        shared.dry_run = task
    report = await asyncio.shield(task)
    return _out(report)
