"""The ``ipam`` command: run the service, migrate, and manage pools."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

from ipam import __version__
from ipam.errors import IpamError
from ipam.logs import configure as configure_logging
from ipam.settings import get_settings

app = typer.Typer(help="Fixed-IP manager for Kubernetes (galaxy-ipam compatible).",
                  no_args_is_help=True, pretty_exceptions_enable=False)
pools_app = typer.Typer(help="Pool configuration (galaxy's floatingips format).",
                        no_args_is_help=True)
app.add_typer(pools_app, name="pools")
err = Console(stderr=True)

EXIT_ERROR = 1
EXIT_INVALID = 2
EXIT_CONFLICT = 3
EXIT_UNAVAILABLE = 4


def _fail(exc: IpamError) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc.message}", highlight=False, soft_wrap=True)
    code = {422: EXIT_INVALID, 400: EXIT_INVALID, 409: EXIT_CONFLICT, 503: EXIT_UNAVAILABLE}
    return typer.Exit(code.get(exc.status, EXIT_ERROR))


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (IPAM_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (IPAM_PORT).")] = None,
) -> None:
    """Run the service (embedded PostgreSQL when IPAM_DATABASE_URL is unset)."""
    import contextlib
    from collections.abc import Iterator

    import uvicorn

    from ipam.api.auth import extender_tls_options
    from ipam.app import create_app, create_extender_app

    settings = get_settings()
    # uvicorn re-raises SIGTERM after its graceful shutdown; make that a normal exit so atexit
    # hooks (stopping an embedded PostgreSQL) run and the exit code is 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    configure_logging(settings.log_level, json_format=settings.log_json)
    app_ = create_app(settings)
    common: dict[str, Any] = {
        "log_level": settings.log_level.lower(), "log_config": None, "access_log": False,
        "timeout_graceful_shutdown": settings.shutdown_grace_seconds}
    main = uvicorn.Server(uvicorn.Config(app_, host=host or settings.host,
                                         port=port or settings.port, **common))
    if settings.extender_port is None:
        main.run()
        return

    class Follower(uvicorn.Server):
        """The extender listener: the main server owns the signals and the lifespan."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    try:
        tls = extender_tls_options(settings)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    follower = Follower(uvicorn.Config(
        create_extender_app(settings, app_), host=settings.extender_host or settings.host,
        port=settings.extender_port, lifespan="off", **common, **tls))

    async def both() -> None:
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

    asyncio.run(both())


@app.command("migrate")
def migrate_cmd() -> None:
    """Apply database migrations up to head."""
    from ipam.app import database_url
    from ipam.storage.database import Database, head_revision, migrate

    async def run() -> None:
        db = Database(database_url(get_settings()))
        try:
            await migrate(db)
        finally:
            await db.dispose()

    try:
        asyncio.run(run())
    except IpamError as exc:
        raise _fail(exc) from None
    typer.echo(f"database at revision {head_revision()}")


@pools_app.command("import")
def pools_import(
    file: Annotated[Path, typer.Argument(help="JSON list or the floatingip-config ConfigMap "
                                              "YAML; - for stdin.", allow_dash=True)],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the diff only.")] = False,
) -> None:
    """Load a galaxy floatingips config (idempotent; refuses to drop addresses in use)."""
    from ipam.app import start_runtime
    from ipam.engine.pool_config import load_document, parse_pool_config
    from ipam.services.allocation import Actor

    text = sys.stdin.read() if str(file) == "-" else _read(file)

    async def run() -> dict[str, object]:
        config = parse_pool_config(load_document(text))
        runtime = await start_runtime(get_settings())
        try:
            diff = await runtime.pools.apply(config, actor=Actor("cli:pools-import"),
                                             dry_run=dry_run)
        finally:
            await runtime.db.dispose()
        return diff.to_dict()

    try:
        result = asyncio.run(run())
    except IpamError as exc:
        raise _fail(exc) from None
    typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


@pools_app.command("list")
def pools_list() -> None:
    """List pools with their ranges."""
    from ipam.app import start_runtime

    async def run() -> list[dict[str, object]]:
        runtime = await start_runtime(get_settings())
        try:
            pools = await runtime.pools.current()
        finally:
            await runtime.db.dispose()
        return [{"name": p.name, "subnet": str(p.subnet), "vlan": p.vlan,
                 "gateway": str(p.gateway) if p.gateway else None,
                 "node_subnets": [str(n) for n in p.node_subnets],
                 "ips": [str(r) for r in p.ranges], "size": p.size} for p in pools]

    try:
        result = asyncio.run(run())
    except IpamError as exc:
        raise _fail(exc) from None
    typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


@app.command()
def check(
    repair: Annotated[bool, typer.Option("--repair", help="Apply the repairs.")] = False,
    output: Annotated[str, typer.Option("-o", "--output", help="table or json")] = "table",
) -> None:
    """Compare PostgreSQL with the cluster's pods; print what is wrong (and fix it: --repair).

    Exit 0 when nothing was found (or everything found was repaired), 3 when problems remain.
    """
    from ipam.app import start_runtime
    from ipam.k8s.client import KubeClient
    from ipam.k8s.workloads import KubeWorkloads
    from ipam.services.pod_lifecycle import PodLifecycle
    from ipam.services.reconciler import Reconciler, Report

    settings = get_settings()

    async def run() -> Report:
        runtime = await start_runtime(settings)
        kube = KubeClient.from_settings(settings)
        try:
            workloads = KubeWorkloads(kube)
            reconciler = Reconciler(runtime.db, runtime.allocator,
                                    PodLifecycle(runtime.allocator, workloads), workloads,
                                    workloads, runtime.catalog, settings.reconciler)
            return await reconciler.run_pass(apply=repair)
        finally:
            kube.close()
            await runtime.db.dispose()

    try:
        report = asyncio.run(run())
    except IpamError as exc:
        raise _fail(exc) from None
    if output == "json":
        typer.echo(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        _print_report(report)
    if report.error:
        err.print(f"[red]error:[/red] {report.error}")
        raise typer.Exit(EXIT_UNAVAILABLE)
    open_items = [f for f in report.findings if f.action in ("none", "skipped", "conflict")]
    raise typer.Exit(EXIT_CONFLICT if open_items else 0)


def _print_report(report: object) -> None:
    from rich.table import Table

    from ipam.services.reconciler import Report

    assert isinstance(report, Report)
    out = Console()
    mode = "repair" if report.applied else "check (nothing changed)"
    out.print(f"{mode}: {report.rows_seen} addresses, {report.pods_seen} pods, "
              f"{len(report.findings)} finding(s), {report.duration_seconds:.2f}s")
    if not report.findings:
        return
    table = Table("KIND", "ADDRESS", "POD", "OWNER", "ACTION", "DETAIL")
    for f in report.findings:
        table.add_row(f.kind, f.address, f.pod or "", f.owner or "", f.action, f.detail)
    out.print(table)


@app.command()
def openapi(
    out: Annotated[Path, typer.Option("-o", "--out", help="Directory for openapi.json and "
                                                           "api-reference.md.")] = Path("docs"),
) -> None:
    """Write the OpenAPI document and a Markdown API reference generated from it."""
    from ipam.api_reference import render_markdown
    from ipam.app import create_app
    from ipam.settings import Settings

    spec = create_app(Settings()).openapi()
    out.mkdir(parents=True, exist_ok=True)
    (out / "openapi.json").write_bytes(
        orjson.dumps(spec, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    (out / "api-reference.md").write_text(render_markdown(spec))
    typer.echo(f"wrote {out / 'openapi.json'} and {out / 'api-reference.md'}")


def _read(path: Path) -> str:
    try:
        if path.stat().st_size > 16 * 1024 * 1024:
            raise typer.BadParameter(f"{path} is larger than 16 MiB; not a pool config")
        return path.read_text()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}") from None


def main() -> None:
    app()
