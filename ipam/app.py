"""Builds the ASGI application: routes, error mapping, and the process lifespan.

``create_app(settings)`` starts nothing at import time; the lifespan connects to the
database (starting an embedded one when no URL is set), migrates, loads the pools file,
starts the background tasks (``ipam.k8s.controllers``), and tears everything down in reverse
order on shutdown.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from ipam import __version__
from ipam.api import (
    audit,
    cni,
    console,
    deps,
    docs_assets,
    errors,
    extender,
    galaxy,
    health,
    metrics,
    operators,
    pools,
    reconciler,
)
from ipam.api.auth import TokenBeforeBody
from ipam.api.body_limit import BodyLimitMiddleware, BodyLimits
from ipam.engine.pool_config import load_document, parse_pool_config
from ipam.errors import Conflict, InvalidInput
from ipam.k8s.controllers import Controllers, kube_configured
from ipam.logs import RequestIdMiddleware
from ipam.services.access import TokenStore
from ipam.services.allocation import Actor
from ipam.services.runtime import Runtime
from ipam.settings import Settings
from ipam.storage import embedded_postgres
from ipam.storage.database import Database, migrate, wait_for_schema

log = logging.getLogger(__name__)

__all__ = ["create_app", "create_extender_app", "database_url", "kube_configured",
           "load_pools_file", "start_runtime"]


def database_url(settings: Settings) -> str:
    """The configured URL, or an embedded PostgreSQL under ``data_dir``."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return embedded_postgres.start(settings.data_dir)


async def load_pools_file(runtime: Runtime, path: Path) -> None:
    """Apply ``IPAM_POOLS_FILE``; every failure names the file (one line, no traceback)."""
    try:
        text = await asyncio.to_thread(path.read_text)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidInput(f"IPAM_POOLS_FILE {path}: cannot read it: {reason}") from None
    try:
        config = parse_pool_config(load_document(text))
        diff = await runtime.pools.apply(config, actor=Actor(f"config:{path.name}"))
    except (InvalidInput, Conflict) as exc:  # the file's fault, not the database's
        exc.message = f"IPAM_POOLS_FILE {path}: {exc.message}"
        exc.args = (exc.message,)
        raise
    except ValueError as exc:  # the JSON/YAML decoders' limit on integer digits
        raise InvalidInput(f"IPAM_POOLS_FILE {path}: a number is too long: "
                           f"{str(exc).split(';')[0]}") from None
    log.info("pools file %s applied: %s", path, diff.to_dict())


async def start_runtime(settings: Settings) -> Runtime:
    db = Database(database_url(settings), pool_size=settings.database_pool_size,
                  max_overflow=settings.database_max_overflow,
                  pool_timeout=settings.database_pool_timeout_seconds)
    try:
        if settings.migrates_on_start():
            await migrate(db)
        else:  # the serving role cannot migrate: `ipam migrate` runs as the owner
            await wait_for_schema(db, settings.schema_wait_seconds,
                                  unreachable_seconds=settings.database_wait_seconds)
        runtime = Runtime.build(settings, db)
        if settings.pools_file is not None:
            await load_pools_file(runtime, settings.pools_file)
        await runtime.catalog.refresh(db)
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
        deps.install(app.state, rt, shared)
        background = Controllers(rt)
        await background.start()
        rt.start()  # the change feed: other replicas' allocations reach filter as they commit
        # Everything imported and built so far lives as long as the process: move it out of
        # the collector's reach, so a full collection walks request garbage, not ~150k
        # long-lived objects (it showed as a third of filter time under py-spy --native).
        gc.collect()
        gc.freeze()
        gc.enable()  # `ipam serve` starts with the collector off
        try:
            yield
        finally:
            await background.stop()
            await rt.stop()
            if own:
                await rt.db.dispose()

    app = FastAPI(title="ipam", version=__version__, lifespan=lifespan,
                  summary="Fixed-IP manager for Kubernetes (galaxy-ipam compatible)",
                  docs_url=None, redoc_url=None)  # docs_assets: served without a CDN
    # A bad token file fails at start, not on the first request.
    shared = deps.AppShared(tokens=TokenStore(settings.auth_tokens_path,
                                              reload_seconds=settings.auth_reload_seconds))
    deps.install(app.state, runtime, shared)
    _common(app, settings)
    app.include_router(metrics.router)
    app.include_router(extender.router if settings.serves_extender_on_api_port()
                       else extender.elsewhere(settings))
    for module in (pools, operators, audit, cni, galaxy, reconciler, console):
        app.include_router(module.router)
    return app


def _common(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(BodyLimitMiddleware, limits=BodyLimits.from_settings(settings))
    app.add_middleware(TokenBeforeBody)
    app.add_middleware(RequestIdMiddleware)
    errors.install(app)
    docs_assets.install(app)
    app.include_router(health.router)


def create_extender_app(settings: Settings, main: FastAPI) -> FastAPI:
    """The extender verbs alone, for their own listener (``IPAM_EXTENDER_PORT``, maybe TLS);
    shares the main app's state, so one runtime serves both."""
    ext = FastAPI(title="ipam scheduler extender", version=__version__, docs_url=None,
                  redoc_url=None)
    ext.state = main.state
    _common(ext, settings)
    ext.include_router(extender.router)
    return ext
