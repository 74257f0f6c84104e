"""The real service (uvicorn, real HTTP) on an ephemeral port, inside the test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import uvicorn

from ipam.app import create_app
from ipam.services.runtime import Runtime
from ipam.settings import Settings


@dataclass
class RunningService:
    url: str
    app_state: object
    client: httpx.AsyncClient

    @property
    def runtime(self) -> Runtime:
        return self.app_state.runtime  # type: ignore[attr-defined,no-any-return]


@asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[RunningService]:
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                            access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(600):
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    if task.done():
        await task
        raise AssertionError("service exited during start-up")
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield RunningService(url, app.state, client)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)


async def wait_until(predicate: object, timeout: float = 10.0) -> None:
    """Poll a zero-argument callable until it returns true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)
