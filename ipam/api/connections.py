"""Connections a client holds without using them: bounded in time and in number.

uvicorn closes a keep-alive connection that stays idle after a response and nothing else: a
connection that never sends a request, sends its headers a byte at a time, stops in the
middle of its body or never reads its response is held for as long as the client likes, and
21,000 of them exhausted the file descriptors (health checks failed with them). A
``ConnectionGuard`` serves one listener and knows, for each connection, whether the service
is waiting on the client:

- for a request (new, or kept alive after a response): it must have its headers in within
  ``header_seconds``, however it drips them;
- for the body of a request the app is reading: all of it within ``body_seconds`` of the
  headers;
- to take a response it does not read (the transport paused writing): ``body_seconds``.

Past its deadline the connection is aborted. At ``max_connections`` a new connection evicts
the one that has waited on its client the longest; only when every connection is being
served does the newcomer get a 503 and is closed. So a flood of idle or slow connections
never keeps ``/healthz`` or kube-scheduler out, and never holds more descriptors than the
cap. The phases come from two sides: the listener's protocol (uvicorn's own, subclassed for
``connection_made``/``connection_lost``/``pause_writing``/``resume_writing`` of
``asyncio.Protocol``) and the ASGI app (a request starts, its body ends, its response ends),
joined by the client's address.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

_BUSY = (b'{"error":{"code":"unavailable","message":"too many connections: every one is '
         b'being served; retry","details":{}}}')
_BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                  b"content-length: " + str(len(_BUSY)).encode() + b"\r\nconnection: close\r\n"
                  b"retry-after: 1\r\n\r\n" + _BUSY)


@dataclass(eq=False, slots=True)
class _Connection:
    key: tuple[str, int]
    transport: asyncio.BaseTransport
    #: Since when the service waits on this client (``None``: the app is serving it).
    waiting_since: float | None = None
    #: What it waits for: "headers", "body" or "reader" (a response it does not read).
    waiting_for: str = ""
    timer: asyncio.TimerHandle | None = None
    writes_paused: bool = False
    #: Between the response's start and its last byte handed to the transport.
    responding: bool = False


class ConnectionGuard:
    """Deadlines and a cap for the connections of one listener (see the module docstring)."""

    def __init__(self, *, header_seconds: float, body_seconds: float,
                 max_connections: int) -> None:
        self.header_seconds = header_seconds
        self.body_seconds = body_seconds
        self.max_connections = max_connections
        self._open: dict[tuple[str, int], _Connection] = {}
        #: Connections closed by the guard, by reason (headers, body, reader, evicted,
        #: refused); reported in the log at most every 30 s.
        self.closed: dict[str, int] = {}
        self._reported: dict[str, int] = {}
        self._last_report = 0.0

    # -- the listener's side --------------------------------------------------------------
    def protocol(self, base: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
        """``base`` (uvicorn's HTTP protocol class) reporting to this guard."""
        guard = self

        class Guarded(base):  # type: ignore[valid-type,misc]
            _guard_key: tuple[str, int] | None = None

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                self._guard_key = guard._opened(transport)

            def connection_lost(self, exc: Exception | None) -> None:
                guard._lost(self._guard_key)
                super().connection_lost(exc)

            def pause_writing(self) -> None:
                super().pause_writing()
                guard._writes(self._guard_key, paused=True)

            def resume_writing(self) -> None:
                super().resume_writing()
                guard._writes(self._guard_key, paused=False)

        Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
        return Guarded

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def _opened(self, transport: asyncio.BaseTransport) -> tuple[str, int] | None:
        peer = transport.get_extra_info("peername")
        if not isinstance(peer, tuple) or len(peer) < 2:
            return None  # not TCP: nothing to key it by, and nothing a remote client holds
        if len(self._open) >= self.max_connections and not self._evict_one():
            transport.write(_BUSY_RESPONSE)  # type: ignore[attr-defined]
            transport.close()
            self._count("refused")
            return None
        key = (str(peer[0]), int(peer[1]))
        conn = _Connection(key, transport)
        self._open[key] = conn
        self._arm(conn, "headers", self.header_seconds)
        return key

    def _lost(self, key: tuple[str, int] | None) -> None:
        conn = self._open.pop(key, None) if key is not None else None
        if conn is not None and conn.timer is not None:
            conn.timer.cancel()

    def _writes(self, key: tuple[str, int] | None, *, paused: bool) -> None:
        conn = self._open.get(key) if key is not None else None
        if conn is None:
            return
        conn.writes_paused = paused
        if paused:
            self._arm(conn, "reader", self.body_seconds)
        elif conn.waiting_for == "reader":
            if conn.responding:
                self._serving(conn)
            else:  # the response is out: the connection idles until its next request
                self._arm(conn, "headers", self.header_seconds)

    def _evict_one(self) -> bool:
        """Abort the connection that has waited on its client the longest, if any does."""
        waiting = [(c.waiting_since, k) for k, c in self._open.items()
                   if c.waiting_since is not None]
        if not waiting:
            return False
        _, key = min(waiting)
        self._close(key, "evicted")
        return True

    # -- deadlines --------------------------------------------------------------------------
    def _arm(self, conn: _Connection, what: str, seconds: float) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
        conn.waiting_for = what
        conn.waiting_since = time.monotonic()
        conn.timer = asyncio.get_running_loop().call_later(seconds, self._expired, conn)

    def _serving(self, conn: _Connection) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        conn.waiting_since = None
        conn.waiting_for = ""

    def _expired(self, conn: _Connection) -> None:
        if self._open.get(conn.key) is conn:
            self._close(conn.key, conn.waiting_for)

    def _close(self, key: tuple[str, int], reason: str) -> None:
        conn = self._open.pop(key)
        if conn.timer is not None:
            conn.timer.cancel()
        # abort, not close: close would wait to flush what a non-reading client never takes.
        conn.transport.abort()  # type: ignore[attr-defined]
        self._count(reason)

    def _count(self, reason: str) -> None:
        self.closed[reason] = self.closed.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._last_report >= 30:
            new = {k: v - self._reported.get(k, 0) for k, v in self.closed.items()
                   if v != self._reported.get(k, 0)}
            log.warning("connections closed by the guard since the last report: %s "
                        "(waited on: headers > %g s, body or reader > %g s; cap %d)", new,
                        self.header_seconds, self.body_seconds, self.max_connections)
            self._reported = dict(self.closed)
            self._last_report = now

    # -- the app's side ---------------------------------------------------------------------
    def _for(self, scope: Scope) -> _Connection | None:
        client = scope.get("client")
        if not client:
            return None
        return self._open.get((str(client[0]), int(client[1])))

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """The ASGI app, telling this guard when a request starts, its body ends and its
        response ends."""
        guard = self

        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            conn = guard._for(scope) if scope["type"] == "http" else None
            if conn is None:
                await app(scope, receive, send)
                return
            headers = dict(scope.get("headers") or [])
            if headers.get(b"content-length", b"0") not in (b"0", b"") or (
                    b"transfer-encoding" in headers):
                guard._arm(conn, "body", guard.body_seconds)
            else:
                guard._serving(conn)

            async def tracked_receive() -> Message:
                message = await receive()
                if conn.waiting_for == "body" and not message.get("more_body", False):
                    guard._serving(conn)
                return message

            async def tracked_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    conn.responding = True
                    if conn.waiting_for == "body":
                        guard._serving(conn)  # answered without (the rest of) the body
                await send(message)
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    conn.responding = False
                    if not conn.writes_paused and guard._open.get(conn.key) is conn:
                        guard._arm(conn, "headers", guard.header_seconds)  # idle, kept alive

            await app(scope, tracked_receive, tracked_send)

        return guarded


def server_options(app: ASGIApp, guard: ConnectionGuard) -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments serving ``app`` behind ``guard``."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return {"app": guard.wrap(app), "http": guard.protocol(AutoHTTPProtocol)}
