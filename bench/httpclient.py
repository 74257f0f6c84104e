"""A minimal keep-alive HTTP/1.1 client on asyncio streams.

httpx costs a few hundred microseconds per request in Python; this client costs tens, so the
figures are the service's and not the load generator's (``/healthz`` round trips are printed
as the client floor). Bodies are pre-encoded bytes; responses must carry Content-Length or be
chunked, which is what uvicorn sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

_LIMIT = 1 << 20
#: uvicorn closes idle keep-alive connections after 5 s; reconnect before that, as Go's
#: http.Transport does transparently, instead of writing into a closed socket.
IDLE_RECONNECT_SECONDS = 4.0


class HttpError(RuntimeError):
    """The server closed the connection or answered something we cannot parse."""


class Connection:
    """One persistent connection; requests on it are strictly sequential."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 url: str) -> None:
        self.reader = reader
        self.writer = writer
        self.url = url
        self.host = urlsplit(url).netloc
        self.last_used = time.monotonic()

    @staticmethod
    async def _streams(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        parts = urlsplit(url)
        return await asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 80,
                                             limit=_LIMIT)

    @classmethod
    async def open(cls, url: str) -> Connection:
        return cls(*await cls._streams(url), url)

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """Send one request and read the whole response: (status, body)."""
        if time.monotonic() - self.last_used > IDLE_RECONNECT_SECONDS:
            await self.close()
            self.reader, self.writer = await self._streams(self.url)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}",
                 f"Content-Length: {len(body)}"]
        if body:
            lines.append("Content-Type: application/json")
        lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        # Small bodies go out in one write (one segment); large ones are not copied.
        if len(body) < 65536:
            self.writer.write(head + body)
        else:
            self.writer.write(head)
            self.writer.write(body)
        await self.writer.drain()
        response = await self._response()
        self.last_used = time.monotonic()
        return response

    async def _response(self) -> tuple[int, bytes]:
        status_line = await self.reader.readline()
        if not status_line:
            raise HttpError("connection closed before a response")
        try:
            status = int(status_line.split(b" ", 2)[1])
        except (IndexError, ValueError):
            raise HttpError(f"bad status line {status_line!r}") from None
        length: int | None = None
        chunked = False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                length = int(value.strip())
            elif key == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readline()).split(b";")[0].strip(), 16)
                if size == 0:
                    await self.reader.readline()
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readline()
            return status, b"".join(parts)
        if length is None:
            raise HttpError("response without Content-Length")
        return status, await self.reader.readexactly(length) if length else b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


class Pool:
    """Connections opened on demand and reused, like Go's http.Transport for one host."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._idle: list[Connection] = []
        self._all: list[Connection] = []

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = await Connection.open(self.url)
            self._all.append(conn)
        try:
            yield conn
        except BaseException:
            self._all.remove(conn)
            await conn.close()
            raise
        self._idle.append(conn)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        async with self.connection() as conn:
            return await conn.request(method, path, body)

    async def close(self) -> None:
        for conn in self._all:
            await conn.close()
        self._all.clear()
        self._idle.clear()


async def timed(conn: Connection, method: str, path: str, body: bytes = b""
                ) -> tuple[float, int, bytes]:
    """(seconds, status, body) of one request."""
    start = time.perf_counter()
    status, data = await conn.request(method, path, body)
    return time.perf_counter() - start, status, data
