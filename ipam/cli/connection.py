"""Where the running service is and who calls it: the root options, and a client per command.

``--url``, ``--token``, ``--token-file`` and ``--timeout`` come before the command
(``ipam --url ... ips list``) and are kept on the typer context; each command that talks to
the service opens its client with ``api(ctx)``. The environment fallbacks are the client's
(``ipam.cli.client``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from ipam.cli.client import ApiClient

CONNECTION_HELP = ("Commands other than serve, migrate, openapi and check (without --remote) "
                   "talk to a running service: --url or IPAM_URL (default: where `ipam serve` "
                   "listens with the same IPAM_HOST and IPAM_PORT, http://127.0.0.1:9040), "
                   "with a bearer token from --token, --token-file, IPAM_TOKEN or "
                   "IPAM_TOKEN_FILE (none for a service without a token file).")


@dataclass(frozen=True)
class Remote:
    """The root options as given (None: not given, the environment decides)."""

    url: str | None
    token: str | None
    token_file: Path | None
    timeout: float


def remote_of(ctx: typer.Context) -> Remote:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Remote) else Remote(None, None, None, 30.0)


@contextmanager
def api(ctx: typer.Context, *, at_least: float = 0.0, at_most: float = float("inf")
        ) -> Iterator[ApiClient]:
    """A client for the service; ``--timeout`` bounded for calls known to be long/short."""
    from ipam.cli.client import ApiClient, Connection

    remote = remote_of(ctx)
    connection = Connection.resolve(url=remote.url, token=remote.token,
                                    token_file=remote.token_file,
                                    timeout=min(max(remote.timeout, at_least), at_most))
    with ApiClient(connection) as client:
        yield client


def root_words(ctx: typer.Context) -> list[str]:
    """The root options to repeat in a command printed for the user to run next: ``--url``,
    ``--token-file`` and ``--timeout`` when given; never ``--token`` (a secret)."""
    remote = remote_of(ctx)
    words: list[str] = []
    if remote.url is not None:
        words += ["--url", remote.url]
    if remote.token_file is not None:
        words += ["--token-file", str(remote.token_file)]
    if remote.timeout != 30.0:
        words += ["--timeout", f"{remote.timeout:g}"]
    return words
