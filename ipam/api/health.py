"""Liveness (the process answers) and readiness (database, schema, caches)."""

from __future__ import annotations

from fastapi import APIRouter

from ipam.api.deps import RuntimeDep
from ipam.api.responses import OrjsonResponse

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(runtime: RuntimeDep) -> OrjsonResponse:
    checks = await runtime.health_checks()
    ok = all(c["ok"] for c in checks.values())
    return OrjsonResponse({"status": "ok" if ok else "unavailable", "checks": checks},
                          status_code=200 if ok else 503)
