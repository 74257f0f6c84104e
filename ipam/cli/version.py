"""``ipam --version`` (this program) and ``ipam version`` (this program and the service).

The version is the installed distribution's (package metadata), what ``pip`` installed; a
source tree run without installing (``python -m ipam`` in a clone) falls back to
``ipam.__version__``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ipam.cli.connection import api
from ipam.cli.exits import CliError
from ipam.cli.output import Document, dump, err


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as distribution_version

    try:
        return distribution_version("ipam")
    except PackageNotFoundError:
        from ipam import __version__

        return __version__


def print_version(value: bool) -> None:
    """``--version``'s callback: eager, so it answers before any command is looked at."""
    if value:
        typer.echo(f"ipam {package_version()}")
        raise typer.Exit()


VersionOpt = Annotated[bool, typer.Option(
    "--version", is_eager=True, callback=print_version, expose_value=False,
    help="Print this program's version and exit (`ipam version` asks the service too).")]


def version(
    ctx: typer.Context,
    client_only: Annotated[bool, typer.Option("--client", help="Do not ask the service.")]
    = False,
    output: Annotated[Document | None, typer.Option("-o", "--output", help="json or yaml.")]
    = None,
) -> None:
    """Print this client's version and, when the service answers, the service's."""
    client = package_version()
    server: str | None = None
    url: str | None = None
    problem: str | None = None
    if not client_only:
        try:
            with api(ctx, at_most=5.0) as service:
                url = service.connection.url
                server = service.server_version()
        except CliError as exc:
            problem = exc.line()
    if output is not None:
        typer.echo(dump({"client": client, "server": server, "url": url}, output.value))
    else:
        typer.echo(f"client: {client}")
        if server is not None:
            typer.echo(f"server: {server} ({url})")
    if problem is not None:
        err.print(f"server version unknown: {problem}")
