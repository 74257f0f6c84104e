"""Builds the ASGI application: routes, error mapping, and the process lifespan.

``create_app(settings)`` starts nothing at import time; the lifespan connects to the
database (starting an embedded one when no URL is set), migrates, loads the pools file, and
tears everything down in reverse order on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from ipam import __version__
from ipam.api import errors, health, pools
from ipam.engine.pool_config import load_document, parse_pool_config
from ipam.services.allocation import Actor
from ipam.services.runtime import Runtime
from ipam.settings import Settings
from ipam.storage import embedded_postgres
from ipam.storage.database import Database, migrate

log = logging.getLogger(__name__)


def database_url(settings: Settings) -> str:
    """The configured URL, or an embedded PostgreSQL under ``data_dir``."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return embedded_postgres.start(settings.data_dir)


async def load_pools_file(runtime: Runtime, path: Path) -> None:
    text = await asyncio.to_thread(path.read_text)
    config = parse_pool_config(load_document(text))
    diff = await runtime.pools.apply(config, actor=Actor(f"config:{path.name}"))
    log.info("pools file %s applied: %s", path, diff.to_dict())


async def start_runtime(settings: Settings) -> Runtime:
    db = Database(database_url(settings), pool_size=settings.database_pool_size,
                  max_overflow=settings.database_max_overflow)
    try:
        await migrate(db)
        runtime = Runtime.build(settings, db)
        if settings.pools_file is not None:
            await load_pools_file(runtime, settings.pools_file)
    except BaseException:
        await db.dispose()
        raise
    return runtime


def create_app(settings: Settings, *, runtime: Runtime | None = None) -> FastAPI:
    """The service; pass ``runtime`` to share one already started (tests, benchmarks)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = runtime is None
        rt = runtime if runtime is not None else await start_runtime(settings)
        app.state.runtime = rt
        try:
            yield
        finally:
            if own:
                await rt.db.dispose()

    app = FastAPI(title="ipam", version=__version__, lifespan=lifespan,
                  summary="Fixed-IP manager for Kubernetes (galaxy-ipam compatible)")
    if runtime is not None:
        app.state.runtime = runtime
    errors.install(app)
    app.include_router(health.router)
    app.include_router(pools.router)
    return app
