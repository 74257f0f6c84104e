"""``ipam serve`` and ``ipam migrate``: the service process and its database schema.

``serve`` is the container's command; ``ipam.cli.main`` calls it without building the whole
command line first. ``migrate`` is the migrate Job's: it applies the migrations as the tables'
owner, so that the service can run as a role that owns nothing.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer

from ipam.cli.database import with_database


def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (IPAM_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (IPAM_PORT).")] = None,
) -> None:
    """Run the service (embedded PostgreSQL when IPAM_DATABASE_URL is unset)."""
    import asyncio
    import gc
    import logging
    import signal

    # No cyclic collection while the service starts: imports and the Kubernetes client's
    # models build ~300k long-lived objects, and the full collections that triggered walked
    # them over and over (0.25-0.5 s of a start). The app's lifespan collects once, moves
    # what survived out of the collector's reach and turns it back on (ipam.app).
    gc.disable()
    import uvicorn

    from ipam.api.auth import extender_tls_options
    from ipam.api.connections import ConnectionGuard, server_options
    from ipam.app import create_app, create_extender_app, start_runtime
    from ipam.logs import configure as configure_logging
    from ipam.settings import get_settings

    settings = get_settings()
    _return_large_buffers_to_the_os()
    # uvicorn re-raises SIGTERM after its graceful shutdown; make that a normal exit so atexit
    # hooks (stopping an embedded PostgreSQL) run and the exit code is 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    configure_logging(settings.log_level, json_format=settings.log_json)
    try:
        tls = extender_tls_options(settings)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    listen = host or settings.listen_host()
    log = logging.getLogger("ipam.serve")
    if settings.extender_port is not None and settings.extender_tls_client_ca is None:
        log.warning("the extender listener on port %d does not require client certificates "
                    "(IPAM_EXTENDER_TLS_CLIENT_CA unset): whoever reaches it can bind pods "
                    "(docs/security.md)", settings.extender_port)
    elif settings.serves_extender_on_api_port() and settings.auth_tokens_path is not None:
        log.warning("IPAM_EXTENDER_ON_API_PORT: the extender verbs are served without "
                    "authentication on the token-protected REST port (docs/security.md)")
    if settings.auth_tokens_path is None:
        log.warning("no token file (IPAM_AUTH_TOKENS_PATH): the REST API is open, so it "
                    "listens on %s%s", listen, " only (IPAM_HOST=0.0.0.0 serves other machines)"
                    if listen == "127.0.0.1" else " as IPAM_HOST/--host says")
    common: dict[str, Any] = {
        "log_level": settings.log_level.lower(), "log_config": None, "access_log": False,
        "timeout_graceful_shutdown": settings.shutdown_grace_seconds}

    def guarded(app_: Any) -> dict[str, Any]:
        """Idle and slow connections time out, and their number is capped, per listener."""
        return server_options(app_, ConnectionGuard(
            header_seconds=settings.http_header_timeout_seconds,
            body_seconds=settings.http_body_timeout_seconds,
            max_connections=settings.http_max_connections))

    class Follower(uvicorn.Server):
        """The extender listener: the main server owns the signals and the lifespan."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    async def run() -> None:
        # Start-up before any listener: a bad pools file or an unreachable database ends as
        # one error line and a non-zero exit (``ipam.cli.exits``), not as a lifespan traceback.
        runtime = await start_runtime(settings)
        try:
            app_ = create_app(settings, runtime=runtime)
            main = uvicorn.Server(uvicorn.Config(**guarded(app_), host=listen,
                                                 port=port or settings.port, **common))
            if settings.extender_port is None:
                await main.serve()
                return
            follower = Follower(uvicorn.Config(
                **guarded(create_extender_app(settings, app_)),
                host=settings.extender_host or listen,
                port=settings.extender_port, lifespan="off", **common, **tls))
            task = asyncio.create_task(main.serve())
            while not main.started and not task.done():  # noqa: ASYNC110 - uvicorn has no event
                await asyncio.sleep(0.05)
            if task.done():
                await task
                return
            extender_task = asyncio.create_task(follower.serve())
            await task
            follower.should_exit = True
            await extender_task
        finally:
            await runtime.db.dispose()

    with_database(run, loop_factory=_event_loop_factory())


def _return_large_buffers_to_the_os() -> None:
    """Fix glibc's mmap threshold at 1 MiB: request bodies and replies of many MiB are then
    always their own mappings, returned to the system when freed. By default glibc raises
    the threshold to the largest block freed so far (up to 32 MiB), after which such buffers
    come from the heap and stay in the process: four 30 MiB full-node filters in a row
    peaked 30-60 MB higher than one (docs/reliability.md, "Memory per request")."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD; not glibc (musl): nothing to tune
    except (OSError, AttributeError, TypeError):
        return


def _event_loop_factory() -> Callable[[], Any] | None:
    """uvloop where it is installed (uvicorn[standard]), as ``uvicorn.run`` would pick."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], Any] = uvloop.new_event_loop
    return factory


def migrate_cmd() -> None:
    """Apply database migrations up to head, as the tables' owner: IPAM_MIGRATE_DATABASE_URL
    (else IPAM_DATABASE_URL). The service then serves as a role that owns nothing."""
    from ipam.app import database_url
    from ipam.settings import get_settings
    from ipam.storage.database import Database, head_revision, migrate

    settings = get_settings()
    owner = settings.migrate_database_url

    async def run() -> None:
        db = Database(owner.get_secret_value() if owner is not None else database_url(settings),
                      pool_size=1, max_overflow=0)
        try:
            await migrate(db)
        finally:
            await db.dispose()

    with_database(run)
    typer.echo(f"database at revision {head_revision()}")
