"""The ``ipam`` command: run the service, migrate, and operate it through its REST API.

``serve``, ``migrate``, ``openapi`` and ``check`` work in-process: ``check`` reads PostgreSQL
and the API server itself because it must work while the service is down (that is when one
wants it most), and the service has no route that runs a pass (``check --remote`` prints the
service's last report instead). Everything else is a client of a running service
(``ipam.cli_client``: URL and token from flags or ``IPAM_URL``/``IPAM_TOKEN``/
``IPAM_TOKEN_FILE``), so it is authorised and audited like any other caller.

Every failure ends as one line on stderr, ``error: ...``, and an exit code from
``ipam.cli_client.ExitCode`` (listed in ``ipam --help``). Heavy imports (httpx, the service,
PyYAML) happen inside the commands so ``ipam --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from ipam import __version__

if TYPE_CHECKING:
    from ipam.cli_client import ApiClient, CliError

EXIT_CODES = ("Exit codes: 0 ok; 1 unexpected error; 2 invalid input or usage; 3 conflict "
              "with the current state, or check found problems; 4 service or database "
              "unavailable; 5 token missing or wrong, or its role may not do this; "
              "6 not found.")

CONNECTION_HELP = ("Commands other than serve, migrate, openapi and check (without --remote) "
                   "talk to a running service: --url or IPAM_URL (default: where `ipam serve` "
                   "listens with the same IPAM_HOST and IPAM_PORT, http://127.0.0.1:9040), "
                   "with a bearer token from --token, --token-file, IPAM_TOKEN or "
                   "IPAM_TOKEN_FILE (none for a service without a token file).")

T = TypeVar("T")
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


class _Group(TyperGroup):
    """Turns every failure into ``error: <one line>`` and its exit code, never a traceback."""

    def invoke(self, ctx: Any) -> Any:  # typer's own click Context; its path is private
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # usage errors, exits
            raise
        except Exception as exc:
            raise typer.Exit(_report(exc)) from None


def _report(exc: Exception) -> int:
    from ipam.cli_client import CliError, ExitCode, exit_code_for_status, one_line
    from ipam.errors import IpamError

    if isinstance(exc, CliError):
        _error_line(exc.line())
        return int(exc.exit_code)
    if isinstance(exc, IpamError):
        _error_line(one_line(exc.message))
        return int(exit_code_for_status(exc.status))
    if isinstance(exc, BrokenPipeError):  # `ipam ips list | head`: the reader had enough
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(ExitCode.OK)
    if os.environ.get("IPAM_DEBUG"):
        raise exc
    _error_line(f"unexpected {type(exc).__name__}: {one_line(str(exc))} (set IPAM_DEBUG=1 "
                "for the traceback)")
    return int(ExitCode.ERROR)


def _error_line(message: str) -> None:
    err.print(Text.assemble(("error:", "red"), " ", message))


app = typer.Typer(cls=_Group, help=f"Fixed-IP manager for Kubernetes (galaxy-ipam "
                                   f"compatible).\n\n{CONNECTION_HELP}",
                  epilog=EXIT_CODES, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode="markdown")
pools_app = typer.Typer(help="Pools: galaxy's floatingips config and its usage.",
                        no_args_is_help=True)
ips_app = typer.Typer(help="Addresses: list, reserve, release.", no_args_is_help=True)
app.add_typer(pools_app, name="pools")
app.add_typer(ips_app, name="ips")


# -- connection ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Remote:
    url: str | None
    token: str | None
    token_file: Path | None
    timeout: float


@app.callback()
def _root(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(
        "--url", metavar="URL", help="The service (IPAM_URL; default http://127.0.0.1:9040).",
        show_default=False)] = None,
    token: Annotated[str | None, typer.Option(
        "--token", metavar="TOKEN", help="Bearer token (IPAM_TOKEN); visible in ps, prefer "
                                         "--token-file.", show_default=False)] = None,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", metavar="FILE", help="File holding the token (IPAM_TOKEN_FILE).",
        show_default=False)] = None,
    timeout: Annotated[float, typer.Option(
        "--timeout", min=0.1, help="Seconds to wait for one answer.")] = 30.0,
) -> None:
    ctx.obj = _Remote(url, token, token_file, timeout)


@contextmanager
def _api(ctx: typer.Context, *, at_least: float = 0.0, at_most: float = float("inf")
         ) -> Iterator[ApiClient]:
    """A client for the service; ``--timeout`` bounded for calls known to be long/short."""
    from ipam.cli_client import ApiClient, Connection

    remote = ctx.obj if isinstance(ctx.obj, _Remote) else _Remote(None, None, None, 30.0)
    connection = Connection.resolve(url=remote.url, token=remote.token,
                                    token_file=remote.token_file,
                                    timeout=min(max(remote.timeout, at_least), at_most))
    with ApiClient(connection) as api:
        yield api


def _fail(message: str, code: str = "INVALID") -> NoReturn:
    from ipam.cli_client import CliError, ExitCode

    raise CliError(message, ExitCode[code])


@contextmanager
def _spinner(description: str) -> Iterator[None]:
    """A spinner with the elapsed time on stderr while a long call runs (nothing if stderr is
    not a terminal: pipes and logs get only the result)."""
    if not err.is_terminal:
        yield
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err, transient=True) as progress:
        progress.add_task(description, total=None)
        yield


# -- output ---------------------------------------------------------------------------------
class Output(enum.StrEnum):
    table = "table"
    wide = "wide"
    json = "json"
    yaml = "yaml"


class Document(enum.StrEnum):
    json = "json"
    yaml = "yaml"


class ReportOutput(enum.StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


OutputOpt = Annotated[Output, typer.Option(
    "-o", "--output", help="table, wide (more columns), json or yaml.")]

Column = tuple[str, Callable[[dict[str, Any]], object]]


def _cell(value: object) -> str:
    if value is None or value == "":
        return "<none>"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "<none>"
    return str(value)


def _widths(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    return [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "   ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def _rows(items: Sequence[dict[str, Any]], columns: Sequence[Column]) -> list[list[str]]:
    return [[_cell(get(item)) for _, get in columns] for item in items]


def _print_table(items: Sequence[dict[str, Any]], columns: Sequence[Column]) -> None:
    """kubectl's plain columns: no borders, nothing truncated or wrapped, easy to grep."""
    headers = [name for name, _ in columns]
    rows = _rows(items, columns)
    widths = _widths(headers, rows)
    typer.echo("\n".join(_line(r, widths) for r in [headers, *rows]))


def _dump(data: object, fmt: str) -> str:
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip("\n")
    import orjson

    return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()


def _print_items(items: Sequence[dict[str, Any]], output: Output, columns: Sequence[Column]
                 ) -> None:
    """``{"items": [...]}`` as JSON or YAML, else a table of ``columns``."""
    if output in (Output.json, Output.yaml):
        typer.echo(_dump({"items": list(items)}, output.value))
    elif not items:
        err.print("no matching items")
    else:
        _print_table(items, columns)


def _pick(output: Output, columns: Sequence[Column], wide: Sequence[Column]) -> list[Column]:
    return [*columns, *wide] if output is Output.wide else list(columns)


def _more_note(shown: int) -> None:
    err.print(f"showing the first {shown}; more match (raise --limit, or --limit 0 for all)")


# -- commands: service and database -----------------------------------------------------------
@app.command()
def version(
    ctx: typer.Context,
    client_only: Annotated[bool, typer.Option("--client", help="Do not ask the service.")]
    = False,
    output: Annotated[Document | None, typer.Option("-o", "--output", help="json or yaml.")]
    = None,
) -> None:
    """Print this client's version and, when the service answers, the service's."""
    from ipam.cli_client import CliError

    server: str | None = None
    url: str | None = None
    problem: str | None = None
    if not client_only:
        try:
            with _api(ctx, at_most=5.0) as api:
                url = api.connection.url
                server = api.server_version()
        except CliError as exc:
            problem = exc.line()
    if output is not None:
        typer.echo(_dump({"client": __version__, "server": server, "url": url}, output.value))
    else:
        typer.echo(f"client: {__version__}")
        if server is not None:
            typer.echo(f"server: {server} ({url})")
    if problem is not None:
        err.print(f"server version unknown: {problem}")


@app.command()
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
        # one error line and a non-zero exit (``_report``), not as a lifespan traceback.
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

    _with_database(run, loop_factory=_event_loop_factory())


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


@app.command("migrate")
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

    _with_database(run)
    typer.echo(f"database at revision {head_revision()}")


@app.command()
def check(
    ctx: typer.Context,
    repair: Annotated[bool, typer.Option("--repair", help="Apply the repairs.")] = False,
    remote: Annotated[bool, typer.Option(
        "--remote", help="Print the running service's last reconciler report instead.")]
    = False,
    output: Annotated[ReportOutput, typer.Option("-o", "--output", help="table, json or yaml.")]
    = ReportOutput.table,
) -> None:
    """Compare PostgreSQL with the cluster's pods; print what is wrong (and fix it: --repair).

    Runs in-process (IPAM_DATABASE_URL and Kubernetes access needed) so it works while the
    service is down. Exit 0 when nothing was found (or everything found was repaired), 3 when
    problems remain, 4 when the pass could not run.
    """
    if remote and repair:
        _fail("--remote prints the service's last report; it cannot --repair (the service "
              "repairs on its own every IPAM_RECONCILER__INTERVAL_SECONDS)")
    if remote:
        with _api(ctx) as api, _spinner("fetching the service's last reconciler report"):
            report: dict[str, Any] = api.get("/v1/reconciler/report")
    else:
        report = _check_in_process(repair)
    if output is ReportOutput.table:
        _print_report(report, remote=remote)
    else:
        typer.echo(_dump(report, output.value))
    if report.get("error"):
        _fail(f"the reconciler pass failed: {report['error']}", "UNAVAILABLE")
    open_items = [f for f in report.get("findings") or []
                  if f.get("action") in ("none", "skipped", "conflict")]
    raise typer.Exit(3 if open_items else 0)


def _check_in_process(repair: bool) -> dict[str, Any]:
    from ipam.app import kube_configured, start_runtime
    from ipam.k8s.client import KubeClient
    from ipam.k8s.workloads import KubeWorkloads
    from ipam.services.pod_lifecycle import PodLifecycle
    from ipam.services.reconciler import Reconciler, Report
    from ipam.settings import get_settings

    settings = get_settings()
    if not kube_configured(settings):
        _fail("no Kubernetes configuration: set IPAM_KUBECONFIG or IPAM_KUBE_API_URL, or run "
              "in a pod; or use --remote for the running service's last report")

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

    what = "repairing" if repair else "checking"
    with _spinner(f"{what}: addresses in PostgreSQL against the cluster's pods"):
        result: dict[str, Any] = _with_database(run).to_dict()
    return result


def _with_database(run: Callable[[], Coroutine[Any, Any, T]], *,
                   loop_factory: Callable[[], Any] | None = None) -> T:
    """``asyncio.run(run())``; a database that cannot be reached is exit 4, not a traceback."""
    import asyncio
    from urllib.parse import urlsplit

    from ipam.errors import IpamError
    from ipam.settings import get_settings

    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(run())
    except IpamError:
        raise
    except Exception as exc:
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        url = get_settings().database_url
        where = "the embedded database"
        if url is not None:
            parts = urlsplit(url.get_secret_value())
            where = f"the database at {parts.hostname}:{parts.port or 5432}"
        assert isinstance(cause, OSError)
        errno = cause.errno if isinstance(cause.errno, int) and cause.errno > 0 else None
        reason = (os.strerror(errno) if errno else cause.strerror or type(cause).__name__)
        _fail(f"cannot reach {where} ({reason.lower()}); check IPAM_DATABASE_URL", "UNAVAILABLE")


def _print_report(report: dict[str, Any], *, remote: bool) -> None:
    findings: list[dict[str, Any]] = report.get("findings") or []
    mode = "repair" if report.get("applied") else "check (nothing changed)"
    if remote:
        mode = f"service's last pass at {report.get('started_at')}, " + (
            "repairs applied" if report.get("applied") else "nothing changed")
    typer.echo(f"{mode}: {report.get('rows_seen', 0)} addresses, {report.get('pods_seen', 0)} "
               f"pods, {len(findings)} finding(s), {report.get('duration_seconds', 0):.2f}s")
    if findings:
        _print_table(findings, [
            ("KIND", lambda f: f.get("kind")), ("ADDRESS", lambda f: f.get("address")),
            ("POD", lambda f: f.get("pod")), ("OWNER", lambda f: f.get("owner")),
            ("ACTION", lambda f: f.get("action")), ("DETAIL", lambda f: f.get("detail"))])


@app.command()
def openapi(
    out: Annotated[Path, typer.Option("-o", "--out", help="Directory for openapi.json and "
                                                           "api-reference.md.")] = Path("docs"),
) -> None:
    """Write the OpenAPI document and a Markdown API reference generated from it."""
    import orjson

    from ipam.api_reference import render_markdown
    from ipam.app import create_app
    from ipam.settings import Settings

    spec = create_app(Settings()).openapi()
    out.mkdir(parents=True, exist_ok=True)
    (out / "openapi.json").write_bytes(
        orjson.dumps(spec, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    (out / "api-reference.md").write_text(render_markdown(spec))
    typer.echo(f"wrote {out / 'openapi.json'} and {out / 'api-reference.md'}")


# -- pools ------------------------------------------------------------------------------------
MAX_CONFIG_BYTES = 16 * 1024 * 1024
#: A pool import runs in one transaction on the service; give it longer than a plain read.
IMPORT_TIMEOUT = 300.0


@pools_app.command("import")
def pools_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="JSON list or the floatingip-config ConfigMap "
                                              "YAML; - for stdin.", allow_dash=True)],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the diff only.")] = False,
    output: Annotated[Document, typer.Option("-o", "--output", help="json or yaml.")]
    = Document.json,
) -> None:
    """Load a galaxy floatingips config (idempotent; refuses to drop addresses in use).

    The file is validated here first (a wrong entry fails without a service), then the service
    applies it in one transaction and prints the diff. Exit 3 when it would strand addresses
    in use.
    """
    from ipam.engine.pool_config import load_document, parse_pool_config

    source = "stdin" if str(file) == "-" else str(file)
    text = _read_stdin() if str(file) == "-" else _read(file)
    config = parse_pool_config(load_document(text))  # ConfigError: exit 2, entry and field
    size = sum(p.size for p in config.pools)
    what = "diffing" if dry_run else "importing"
    content_type = "application/json" if text.lstrip().startswith("[") else "application/yaml"
    with _api(ctx, at_least=IMPORT_TIMEOUT) as api, _spinner(
            f"{what} {len(config.pools)} pool(s), {size} addresses from {source}"):
        diff = api.post("/v1/pools/import", params={"dry_run": dry_run}, content=text,
                        content_type=content_type)
    typer.echo(_dump(diff, output.value))


POOL_COLUMNS: list[Column] = [
    ("NAME", lambda p: p["name"]), ("SUBNET", lambda p: p["subnet"]),
    ("VLAN", lambda p: p["vlan"]), ("TOTAL", lambda p: p["total"]),
    ("USED", lambda p: p["used"]), ("FREE", lambda p: p["free"])]
POOL_WIDE: list[Column] = [
    ("GATEWAY", lambda p: p["gateway"]), ("ALLOCATED", lambda p: p["allocated"]),
    ("KEPT", lambda p: p["kept"]), ("RESERVED", lambda p: p["reserved"]),
    ("NODE-SUBNETS", lambda p: p["node_subnets"]), ("RANGES", lambda p: p["ips"])]
COUNT_COLUMNS: list[Column] = [
    ("TOTAL", lambda c: c["total"]), ("ALLOCATED", lambda c: c["allocated"]),
    ("KEPT", lambda c: c["kept"]), ("RESERVED", lambda c: c["reserved"]),
    ("FREE", lambda c: c["free"])]


@pools_app.command("list")
def pools_list(ctx: typer.Context, output: OutputOpt = Output.table) -> None:
    """Pools in config order with their usage."""
    with _api(ctx) as api:
        body = api.get("/v1/pools")
    if output in (Output.json, Output.yaml):
        typer.echo(_dump(body, output.value))
        return
    _print_items(body["items"], output, _pick(output, POOL_COLUMNS, POOL_WIDE))


@pools_app.command("show")
def pools_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Pool name (see `ipam pools list`).")],
    output: Annotated[Document | None, typer.Option("-o", "--output", help="json or yaml.")]
    = None,
) -> None:
    """One pool: its config, and usage in total, per range and for its VLAN."""
    from ipam.cli_client import CliError, ExitCode

    with _api(ctx) as api:
        body = api.get("/v1/pools")
    pool = next((p for p in body["items"] if p["name"] == name), None)
    if pool is None:
        names = ", ".join(p["name"] for p in body["items"]) or "none"
        raise CliError(f"pool {name!r} does not exist (pools: {names})", ExitCode.NOT_FOUND)
    vlan = next((v for v in body["vlans"] if name in v["pools"]), None)
    if output is not None:
        typer.echo(_dump({**pool, "vlan_usage": vlan}, output.value))
        return
    fields = [("Name", pool["name"]), ("Subnet", pool["subnet"]),
              ("Gateway", _cell(pool["gateway"])), ("VLAN", _cell(pool["vlan"])),
              ("Node subnets", _cell(pool["node_subnets"])),
              ("Addresses", f"{pool['total']} total, {pool['used']} used "
                            f"({pool['allocated']} allocated, {pool['kept']} kept, "
                            f"{pool['reserved']} reserved), {pool['free']} free")]
    typer.echo("\n".join(f"{label + ':':<14}{value}" for label, value in fields))
    typer.echo("\nRanges:")
    _print_table(pool["ranges"], [("RANGE", lambda r: r["range"]), *COUNT_COLUMNS])
    if vlan is not None:
        typer.echo(f"\nVLAN {_cell(vlan['vlan'])} (pools {', '.join(vlan['pools'])}):")
        _print_table([vlan], COUNT_COLUMNS)


def _read(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            _fail(f"{path} is larger than 16 MiB; not a pool config")
        return path.read_text()
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror}")
    except UnicodeDecodeError:
        _fail(f"{path} is not UTF-8 text; not a pool config")


def _read_stdin() -> str:
    text = sys.stdin.read(MAX_CONFIG_BYTES + 1)
    if len(text) > MAX_CONFIG_BYTES:
        _fail("stdin holds more than 16 MiB; not a pool config")
    return text


# -- addresses --------------------------------------------------------------------------------
class State(enum.StrEnum):
    free = "free"
    reserved = "reserved"
    allocated = "allocated"
    kept = "kept"
    quarantined = "quarantined"


def _pod(item: dict[str, Any]) -> str | None:
    if item.get("pod_name"):
        return f"{item.get('pod_namespace')}/{item['pod_name']}"
    return None


ADDRESS_COLUMNS: list[Column] = [
    ("ADDRESS", lambda a: a["address"]), ("POOL", lambda a: a["pool"]),
    ("STATE", lambda a: a["state"]), ("OWNER", lambda a: a["owner"]), ("POD", _pod),
    ("NODE", lambda a: a["node"])]
ADDRESS_WIDE: list[Column] = [
    ("VLAN", lambda a: a["vlan"]), ("GATEWAY", lambda a: a["gateway"]),
    ("POLICY", lambda a: a["policy"]), ("POD-UID", lambda a: a["pod_uid"]),
    ("UPDATED", lambda a: _short_time(a["updated_at"])), ("NOTE", lambda a: a["note"])]


@ips_app.command("list")
def ips_list(
    ctx: typer.Context,
    pool: Annotated[str | None, typer.Option("--pool", help="Pool name.")] = None,
    subnet: Annotated[str | None, typer.Option("--subnet", help="Addresses in this CIDR.")]
    = None,
    node: Annotated[str | None, typer.Option("--node", help="Node name.")] = None,
    namespace: Annotated[str | None, typer.Option("-n", "--namespace", help="Pod namespace.")]
    = None,
    owner: Annotated[str | None, typer.Option(
        "--owner", help="Owner key (deploy/NS/NAME, sts/NS/NAME/ORDINAL, reserved/TOKEN, ...); "
                        "a trailing * matches a prefix.")] = None,
    state: Annotated[State | None, typer.Option("--state", help="Only this state.")] = None,
    limit: Annotated[int, typer.Option(
        "--limit", min=0, help="At most this many (pages are followed); 0: all.")] = 1000,
    output: OutputOpt = Output.table,
) -> None:
    """Addresses in address order, free ones included unless a filter leaves them out."""
    params = {"pool": pool, "subnet": subnet, "node": node, "namespace": namespace,
              "owner": owner, "state": state.value if state else None}
    with _api(ctx) as api:
        listing = api.list_all("/v1/addresses", params, limit=limit or None)
    _print_items(listing.items, output, _pick(output, ADDRESS_COLUMNS, ADDRESS_WIDE))
    if listing.more:
        _more_note(len(listing.items))


def _address(value: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        _fail(f"{value!r} is not an IP address")


@ips_app.command("reserve")
def ips_reserve(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(help="A free address of a pool.")],
    note: Annotated[str | None, typer.Option("--note", help="Why (kept in the audit trail).")]
    = None,
) -> None:
    """Keep a free address out of allocation (owner reserved/<token name>). Exit 3 if taken."""
    from ipam.cli_client import path_segment

    ip = _address(address)
    with _api(ctx) as api:
        row = api.post(f"/v1/addresses/{path_segment(ip)}/reserve",
                       json={"note": note} if note else None)
    typer.echo(f"reserved {row['address']} (owner {row['owner']})")


@ips_app.command("release")
def ips_release(
    ctx: typer.Context,
    address: Annotated[str | None, typer.Argument(help="The address to free.",
                                                  show_default=False)] = None,
    owner: Annotated[str | None, typer.Option(
        "--owner", help="Free every address of this owner key instead (all or none).")]
    = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Even while a live pod uses it (that pod keeps running with it).")]
    = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (audit trail).")] = None,
) -> None:
    """Free an address (reserved, kept, or allocated with --force), or all of an owner's.

    Exit 3 (nothing freed) while a live pod holds one and --force is not given.
    """
    from ipam.cli_client import CliError, path_segment

    if (address is None) == (owner is None):
        _fail("give an ADDRESS or --owner KEY (one of them)")
    ip = _address(address) if address is not None else None
    try:
        with _api(ctx) as api:
            if ip is not None:
                done = api.post(f"/v1/addresses/{path_segment(ip)}/release",
                                params={"force": force},
                                json={"reason": reason} if reason else None)
            else:
                done = api.post("/v1/owners/release", params={"force": force},
                                json={"owner": owner, "reason": reason})
    except CliError as exc:
        raise _with_force_hint(exc) from None
    released = [row["address"] for row in done["released"]]
    if ip is None:
        typer.echo(f"released {len(released)} address(es) of {owner}: {', '.join(released)}")
    elif released:
        typer.echo(f"released {released[0]}")
    else:
        typer.echo(f"{ip} was already free")


def _with_force_hint(exc: CliError) -> CliError:
    """The service's 409 for a live pod, in the CLI's terms (``--force``, not ``force=true``)."""
    from ipam.cli_client import CliError

    live = exc.details.get("addresses")
    if exc.status != 409 or not isinstance(live, list) or not live:
        return exc
    held = "; ".join(f"{a.get('address')} is allocated to {a.get('pod')}" for a in live
                     if isinstance(a, dict))
    them = "it" if len(live) == 1 else "them"
    return CliError(f"{held}; pass --force to release {them} anyway", exc.exit_code,
                    status=exc.status, code=exc.code, details=exc.details)


# -- audit ------------------------------------------------------------------------------------
#: ``--follow`` re-reads rows this much older than the newest it saw (by the rows' own server
#: timestamps): a transaction that took its audit id early but committed late still shows up.
FOLLOW_WINDOW = timedelta(seconds=30)
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _when(value: str | None, flag: str) -> datetime | None:
    """``30m``/``2h``/``7d`` ago (this machine's clock), or an ISO time (UTC if no zone)."""
    if value is None:
        return None
    match = _DURATION.match(value.strip())
    if match:
        return datetime.now(UTC) - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        _fail(f"{flag} {value!r}: give a duration (30s, 10m, 2h, 7d) or an ISO time "
              "(2024-05-01T10:00:00Z)")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _short_time(value: str | None) -> str | None:
    """``2024-05-01T10:00:00.123456Z`` as ``2024-05-01T10:00:00Z``."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return value


def _at(row: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(row["at"])


def _change(row: dict[str, Any]) -> str | None:
    """``reserved->free``: the address's state before and after, when the row has them."""
    before = (row.get("before") or {}).get("state")
    after = (row.get("after") or {}).get("state")
    if before is None and after is None:
        return None
    return f"{before or '-'}->{after or '-'}"


AUDIT_COLUMNS: list[Column] = [
    ("ID", lambda r: r["id"]), ("AT", lambda r: _short_time(r["at"])),
    ("ACTOR", lambda r: r["actor"]), ("ACTION", lambda r: r["action"]),
    ("ADDRESS", lambda r: r["address"]), ("OWNER", lambda r: r["owner"]), ("POD", _pod)]
#: Free text last, so the columns before it split on whitespace.
AUDIT_REASON: Column = ("REASON", lambda r: r["reason"])
AUDIT_WIDE: list[Column] = [
    ("POOL", lambda r: r["pool"]), ("POD-UID", lambda r: r["pod_uid"]),
    ("REQUEST-ID", lambda r: r["request_id"]), ("CHANGE", _change)]


def _audit_columns(output: Output) -> list[Column]:
    return [*_pick(output, AUDIT_COLUMNS, AUDIT_WIDE), AUDIT_REASON]


@app.command()
def audit(
    ctx: typer.Context,
    address: Annotated[str | None, typer.Option("--address", help="One address.")] = None,
    namespace: Annotated[str | None, typer.Option("-n", "--namespace", help="Pod namespace.")]
    = None,
    pod: Annotated[str | None, typer.Option("--pod", help="Pod name.")] = None,
    owner: Annotated[str | None, typer.Option("--owner", help="Owner key.")] = None,
    actor: Annotated[str | None, typer.Option(
        "--actor", help="scheduler, reconciler, operator:<token>, cni:<token>, ...")] = None,
    action: Annotated[str | None, typer.Option(
        "--action", help="allocate, release, keep, reserve, pools.import, ...")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="Rows at or after: 30m, 2h, 7d ago, or an ISO time.")] = None,
    until: Annotated[str | None, typer.Option(
        "--until", help="Rows before: a duration ago or an ISO time.")] = None,
    limit: Annotated[int, typer.Option(
        "--limit", min=0, help="At most this many (newest); 0: all.")] = 100,
    follow: Annotated[bool, typer.Option(
        "-f", "--follow", help="Then print new rows as they come, until interrupted.")]
    = False,
    max_seconds: Annotated[float | None, typer.Option(
        "--max-seconds", min=0, help="Stop following after this long (scripts, tests).")]
    = None,
    interval: Annotated[float, typer.Option("--interval", min=0.1, hidden=True)] = 1.0,
    output: OutputOpt = Output.table,
) -> None:
    """The audit trail: who changed which address, when and why; newest first.

    With --follow the rows come oldest first, the newest last, and new rows are appended as
    they are written (polled every second; json prints one object per line).
    """
    started = time.monotonic()
    params: dict[str, Any] = {
        "address": _address(address) if address else None, "namespace": namespace,
        "pod": pod, "owner": owner, "actor": actor, "action": action,
        "until": _iso(_when(until, "--until"))}
    since_at = _when(since, "--since")
    with _api(ctx) as api:
        listing = api.list_all("/v1/audit", {**params, "since": _iso(since_at)},
                               limit=limit or None)
        columns = _audit_columns(output)
        if not follow:
            _print_items(listing.items, output, columns)
            if listing.more:
                _more_note(len(listing.items))
            return
        stream = _Stream(output, columns, listing.items)
        stream.emit(sorted(listing.items, key=lambda r: r["id"]))
        deadline = None if max_seconds is None else started + max_seconds
        try:
            _follow(api, params, since_at, listing, stream, interval, deadline)
        except KeyboardInterrupt:
            return


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class _Stream:
    """Rows printed as they arrive: table columns sized by the first batch, one JSON object
    per line, or one YAML document each."""

    def __init__(self, output: Output, columns: Sequence[Column],
                 first: Sequence[dict[str, Any]]) -> None:
        self.output, self.columns = output, columns
        headers = [name for name, _ in columns]
        self.widths = _widths(headers, _rows(first, columns))
        if output in (Output.table, Output.wide):
            typer.echo(_line(headers, self.widths))

    def emit(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            if self.output is Output.json:
                import orjson

                typer.echo(orjson.dumps(row).decode())
            elif self.output is Output.yaml:
                typer.echo("---\n" + _dump(row, "yaml"))
            else:
                typer.echo(_line(_rows([row], self.columns)[0], self.widths))


def _follow(api: ApiClient, params: dict[str, Any], since_at: datetime | None,
            first: Any, stream: _Stream, interval: float, deadline: float | None) -> None:
    """Poll for rows not printed yet (by id) and print them oldest first.

    Each poll asks for the rows from ``FOLLOW_WINDOW`` before the newest one seen (so late
    commits are caught) and drops the ids already printed. When the first listing was cut by
    ``--limit``, rows below its oldest id are history that was left out, not news.
    """
    seen: dict[int, datetime] = {r["id"]: _at(r) for r in first.items}
    floor = min(seen) if first.more and seen else 0
    while True:
        pause = interval if deadline is None else min(interval, deadline - time.monotonic())
        if pause <= 0:
            return
        time.sleep(pause)
        window = max(seen.values()) - FOLLOW_WINDOW if seen else None
        start = max((t for t in (window, since_at) if t is not None), default=None)
        rows = api.list_all("/v1/audit", {**params, "since": _iso(start)}, limit=None).items
        fresh = sorted((r for r in rows if r["id"] not in seen and r["id"] > floor),
                       key=lambda r: r["id"])
        stream.emit(fresh)
        seen.update((r["id"], _at(r)) for r in fresh)
        if seen:  # rows older than the window never come back: forget them
            horizon = max(seen.values()) - FOLLOW_WINDOW
            for old in [i for i, t in seen.items() if t < horizon]:
                del seen[old]


def main() -> None:
    if sys.argv[1:] == ["serve"]:
        # The container's command, straight to it: typer building the whole command line
        # first took 0.1-0.3 s of every start. Anything else goes through typer.
        try:
            serve()
        except typer.BadParameter as exc:  # the extender's TLS files
            exc.show()
            sys.exit(exc.exit_code)
        except typer.Exit as exc:
            sys.exit(exc.exit_code)
        except Exception as exc:
            sys.exit(_report(exc))
        return
    app()
