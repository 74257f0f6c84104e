"""Operator view of pools: config and usage per pool."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ipam.services.pool_config import pool_usage

router = APIRouter(prefix="/v1", tags=["pools"])


@router.get("/pools")
async def list_pools(request: Request) -> dict[str, Any]:
    """Pools in config order with total, allocated, kept, reserved and free addresses."""
    usage = await pool_usage(request.app.state.runtime.db)
    return {"items": [u.to_dict() for u in usage]}
