"""``GET /metrics`` in Prometheus text format."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from ipam.api.deps import RuntimeDep
from ipam.errors import IpamError
from ipam.services.pool_config import pool_usage

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


@router.get("/metrics", response_class=Response)
async def metrics(runtime: RuntimeDep) -> Response:
    try:
        runtime.usage = await pool_usage(runtime.db)
    except IpamError as exc:  # database down: serve the last snapshot, the rest still counts
        log.warning("pool usage for /metrics unavailable: %s", exc.message)
    except Exception:  # e.g. the schema is not migrated yet: the task metrics matter most then
        log.exception("pool usage for /metrics failed")
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
