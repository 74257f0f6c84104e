"""The ``ipam`` command against the real service: typer's runner in a thread, real HTTP.

The service (uvicorn, PostgreSQL, the fake API server, a token file) runs in the test's event
loop (``rest`` from ``tests/api/rest_conftest.py``); the command runs in a worker thread, as
it would in another process, and talks to it over HTTP.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from ipam.cli import app
from tests.api.rest_conftest import (
    ADMIN_TOKEN,
    rest_fixture,  # noqa: F401
    rest_seed_pod_fixture,  # noqa: F401
)
from tests.service_harness import RunningService

#: Every variable the client reads, unset unless a test sets it (the developer's shell may
#: have its own).
CLIENT_ENV = ("IPAM_URL", "IPAM_TOKEN", "IPAM_TOKEN_FILE", "IPAM_HOST", "IPAM_PORT",
              "IPAM_DEBUG")


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.code}\nstdout: {self.stdout}\nstderr: {self.stderr}"


def client_env(url: str | None = None, token: str | None = ADMIN_TOKEN,
               **more: str | None) -> dict[str, str | None]:
    env: dict[str, str | None] = dict.fromkeys(CLIENT_ENV)
    env.update(IPAM_URL=url, IPAM_TOKEN=token)
    env.update(more)
    return env


def invoke_sync(env: Mapping[str, str | None], *args: str) -> Run:
    result = CliRunner().invoke(app, list(args), env=dict(env))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Run(result.exit_code, result.stdout, result.stderr)


async def invoke(env: Mapping[str, str | None], *args: str) -> Run:
    """``ipam ARGS`` in a worker thread while the service keeps serving in this loop."""
    return await asyncio.to_thread(invoke_sync, env, *args)


@pytest.fixture
def cli(rest: RunningService) -> Cli:
    return Cli(rest)


class Cli:
    """``await cli("ips", "list")`` as the admin token; ``token=`` for another one."""

    def __init__(self, service: RunningService) -> None:
        self.service = service

    async def __call__(self, *args: str, token: str | None = ADMIN_TOKEN,
                       **env: str | None) -> Run:
        return await invoke(client_env(self.service.url, token, **env), *args)


def closed_port() -> int:
    """A local port nothing listens on (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def error_line(run: Run) -> str:
    """The single ``error: ...`` line a failure prints, asserting it is exactly one line."""
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), str(run)
    assert "Traceback" not in run.stderr
    return lines[0]
