"""Connections that hold the service without using it (issue 14, item 8), over raw sockets on
loopback against the real app behind ``ipam.api.connections.ConnectionGuard``, as
``ipam serve`` runs it: silent, dripping headers, a body that stops, idle after a response, a
flood over the cap. Each is closed by the server; the cap holds; /healthz keeps answering.

Deadlines here are fractions of a second so the tests are quick; what is asserted is that
the server closes the connection (an end of stream or a reset), never how fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import psutil
import pytest
import uvicorn
from sqlalchemy import text
from starlette.types import Receive, Scope, Send

from ipam.api.connections import ConnectionGuard, server_options
from ipam.app import create_app
from tests.conftest import FIXTURES
from tests.service_harness import RunningService

#: Generous: how long a test waits for the server to close a connection it must close.
CLOSE_WITHIN = 30.0


@asynccontextmanager
async def guarded(app: Any, **limits: Any) -> AsyncIterator[tuple[int, ConnectionGuard]]:
    values: dict[str, Any] = {"header_seconds": 0.3, "body_seconds": 0.3,
                              "max_connections": 1000}
    values.update(limits)
    guard = ConnectionGuard(**values)
    server = uvicorn.Server(uvicorn.Config(**server_options(app, guard), host="127.0.0.1",
                                           port=0, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done()
        await asyncio.sleep(0.02)
    try:
        yield server.servers[0].sockets[0].getsockname()[1], guard
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)


@pytest.fixture
async def served(service: RunningService) -> AsyncIterator[tuple[int, ConnectionGuard]]:
    async with guarded(create_app(service.runtime.settings, runtime=service.runtime)) as s:
        yield s


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent until it closed (b"" if nothing); fails if it never does."""
    data = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(65536), CLOSE_WITHIN):
            data += chunk
    return data


async def healthz(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        return await asyncio.wait_for(reader.read(), CLOSE_WITHIN)
    finally:
        writer.close()


def server_side(port: int) -> int:
    """Established TCP connections whose local end is the server's port (this process holds
    both ends of each)."""
    return sum(1 for c in psutil.Process().net_connections(kind="tcp")
               if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)


async def test_silent_connections_are_closed(served: tuple[int, ConnectionGuard]) -> None:
    port, guard = served
    pairs = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
    try:
        replies = await asyncio.gather(*(closed_by_server(r) for r, _ in pairs))
        assert replies == [b""] * 20
        assert guard.closed.get("headers") == 20
        assert guard.open_connections == 0
    finally:
        for _, writer in pairs:
            writer.close()
    assert (await healthz(port)).startswith(b"HTTP/1.1 200")


async def test_headers_dripped_a_byte_at_a_time_are_cut(
        served: tuple[int, ConnectionGuard]) -> None:
    """Each byte arrives well within any idle timeout; the headers as a whole never do."""
    port, guard = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    drip = b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 400
    sent = 0
    try:
        closed = asyncio.create_task(closed_by_server(reader))
        for byte in drip:
            if closed.done():
                break
            with contextlib.suppress(ConnectionError):
                writer.write(bytes([byte]))
                await writer.drain()
            sent += 1
            await asyncio.sleep(0.05)
        assert await closed == b""
        assert sent < len(drip), "the server waited for the whole drip"
        assert guard.closed.get("headers") == 1
    finally:
        writer.close()


async def test_a_body_that_stops_is_cut_and_reserves_nothing(
        served: tuple[int, ConnectionGuard], service: RunningService) -> None:
    port, guard = served
    body = (FIXTURES / "extender/bind-request.json").read_bytes()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /v1/bind HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body[:20])
        await writer.drain()
        assert await closed_by_server(reader) == b""
        assert guard.closed.get("body") == 1
        assert gc.isenabled()
    finally:
        writer.close()
    async with service.runtime.db.engine.connect() as conn:
        held = await conn.scalar(text("SELECT count(*) FROM addresses WHERE state <> 'free'"))
    assert held == 0


async def test_an_idle_keep_alive_connection_that_drips_is_cut(
        served: tuple[int, ConnectionGuard]) -> None:
    port, guard = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), CLOSE_WITHIN)
        assert head.startswith(b"HTTP/1.1 200")
        closed = asyncio.create_task(closed_by_server(reader))
        for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 400:
            if closed.done():
                break
            with contextlib.suppress(ConnectionError):
                writer.write(bytes([byte]))
                await writer.drain()
            await asyncio.sleep(0.05)
        assert await closed == b""
        assert guard.closed.get("headers") == 1
    finally:
        writer.close()


async def test_a_flood_over_the_cap_never_holds_more_and_healthz_answers(
        service: RunningService) -> None:
    """500 silent connections against a cap of 25 (deadlines long enough that none expires):
    each newcomer evicts the oldest waiting one, the server never holds more than the cap, and
    a health check gets through at once."""
    app = create_app(service.runtime.settings, runtime=service.runtime)
    async with guarded(app, header_seconds=600, max_connections=25) as (port, guard):
        writers = []
        try:
            most = 0
            for _ in range(500):
                writers.append((await asyncio.open_connection("127.0.0.1", port))[1])
                await asyncio.sleep(0)
                most = max(most, guard.open_connections)
            assert most <= 25 and guard.open_connections <= 25
            # The last evictions reach the sockets (closed server-side) within CLOSE_WITHIN.
            await wait_for(lambda: server_side(port) <= 25)
            assert guard.closed.get("evicted", 0) >= 475
            for _ in range(3):
                assert (await healthz(port)).startswith(b"HTTP/1.1 200")
            assert server_side(port) <= 25
        finally:
            for writer in writers:
                writer.close()


async def test_when_every_connection_is_being_served_a_newcomer_gets_503() -> None:
    """Nothing to evict (each connection is inside the app): the cap refuses, with a 503 in
    the error envelope, and serves again once a slot frees."""
    release = asyncio.Event()
    inside = 0

    async def slow_app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal inside
        if scope["type"] != "http":
            return
        inside += 1
        if scope["path"] == "/slow":
            await release.wait()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"done"})

    async with guarded(slow_app, max_connections=3) as (port, guard):
        busy = []
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            await writer.drain()
            busy.append((reader, writer))
        await wait_for(lambda: inside == 3)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        refused = await closed_by_server(reader)
        writer.close()
        assert refused.startswith(b"HTTP/1.1 503") and b'"code":"unavailable"' in refused
        assert guard.closed.get("refused") == 1
        release.set()
        for reader, writer in busy:
            assert b"\r\ndone\r\n" in await closed_by_server(reader)
            writer.close()
        assert (await healthz(port)).startswith(b"HTTP/1.1 200")


async def test_a_client_that_does_not_read_its_response_is_cut() -> None:
    big = b"x" * (8 << 20)

    async def large(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": big})

    async with guarded(large) as (port, guard):
        _, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
        transport: Any = writer.transport
        transport.pause_reading()  # never read: the server's writes back up
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await wait_for(lambda: guard.closed.get("reader") == 1)
        assert guard.open_connections == 0
        writer.close()


async def wait_for(predicate: Callable[[], bool] | Callable[[], Awaitable[bool]]) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), CLOSE_WITHIN)
