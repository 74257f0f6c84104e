"""The reconciler's last report, for operators and ``ipam check`` against a running service."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ipam.api.auth import Reader
from ipam.api.deps import RuntimeDep
from ipam.api.errors import error_responses
from ipam.errors import NotFound

router = APIRouter(prefix="/v1", tags=["reconciler"])


@router.get("/reconciler/report", responses=error_responses(401, 403, 404))
async def last_report(runtime: RuntimeDep, _: Reader) -> dict[str, Any]:
    """What the last pass found and did (404 before the first pass on this replica)."""
    reconciler = runtime.reconciler
    report = reconciler.last_report if reconciler is not None else None
    if report is None:
        raise NotFound("no reconciler pass has run on this replica yet")
    result: dict[str, Any] = report.to_dict()
    return result
