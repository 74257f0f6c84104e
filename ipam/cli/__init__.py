"""The ``ipam`` command: run the service, migrate, and operate it through its REST API.

``serve``, ``migrate``, ``openapi`` and ``check`` work in-process: ``check`` reads PostgreSQL
and the API server itself because it must work while the service is down (``check --remote``
prints the service's last report instead). Everything else is a client of a running service
(``ipam.cli.client``: URL and token from the root options or ``IPAM_URL``/``IPAM_TOKEN``/
``IPAM_TOKEN_FILE``), so it is authorised and audited like any other caller.

One module per use case (``pools``, ``ips``, ``audit``, ``check``, ``serve``, ``version``,
``openapi``); what they share: ``output`` (tables, json/yaml), ``exits`` (the one ``error:``
line and the exit codes listed in ``ipam --help``), ``connection`` and ``client`` (the
service), ``watch`` (``--watch``), ``inputs`` (values checked before any call). Heavy imports
(httpx, the service, PyYAML) happen inside the commands so ``ipam --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ipam.cli.audit import audit
from ipam.cli.check import check
from ipam.cli.connection import CONNECTION_HELP, Remote
from ipam.cli.exits import EXIT_CODES, ErrorReportingGroup, report
from ipam.cli.ips import ips_app
from ipam.cli.openapi import openapi
from ipam.cli.pools import pools_app
from ipam.cli.serve import migrate_cmd, serve
from ipam.cli.version import VersionOpt, version

__all__ = ["app", "main"]

app = typer.Typer(cls=ErrorReportingGroup, help=f"Fixed-IP manager for Kubernetes (galaxy-ipam "
                                                f"compatible).\n\n{CONNECTION_HELP}",
                  epilog=EXIT_CODES, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode="markdown")
app.add_typer(pools_app, name="pools")
app.add_typer(ips_app, name="ips")


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
    _version: VersionOpt = False,
) -> None:
    ctx.obj = Remote(url, token, token_file, timeout)


app.command()(version)
app.command()(serve)
app.command("migrate")(migrate_cmd)
app.command()(check)
app.command()(openapi)
app.command()(audit)


def main() -> None:
    """The ``ipam`` console script and ``python -m ipam``."""
    if sys.argv[1:] == ["serve"]:
        # The container's command, straight to it: typer building the whole command line
        # first took 0.1-0.3 s of every start. Anything else goes through typer.
        try:
            serve()
        except typer.Exit as exc:
            sys.exit(exc.exit_code)
        except Exception as exc:  # the extender's TLS files (BadParameter) included
            sys.exit(report(exc))
        return
    app()
