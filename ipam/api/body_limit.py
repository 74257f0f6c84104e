"""Request bodies: a size cap per route, and a cap on the bytes of all bodies in flight.

A body costs memory while it arrives and while its route works on it, a few times its size
(docs/reliability.md has the figures). Two bounds keep the process under its memory limit:

- per request, ``BodyLimits.cap``: full node objects for the extender's filter and prioritize
  (``max_body_bytes``, 32 MiB: 5,000 realistic nodes are ~19 MiB), galaxy's pool config for
  ``/v1/pools/import`` (the pool config's own 4 MiB limit), ``max_api_body_bytes`` (1 MiB)
  anywhere else. A declared ``Content-Length`` over the cap is refused before the body is
  read; a chunked body is counted as it arrives and refused at the first byte over, whatever
  the route would have made of the failed read. Both are a 413 in the error envelope.
- together, ``BodyBudget``: the bodies being received or worked on may hold
  ``bytes_in_flight`` (48 MiB) at most, and the large ones (over 1 MiB) ``max_body_bytes`` of
  it, so that one full-node filter at a time runs while binds and small calls still pass. A
  request takes its declared length before its body is read (the rest waits in the socket,
  costing nothing), a chunked one chunk by chunk, and gives it back when its response is
  done. One that cannot get its share within ``wait_seconds`` is a 503 (retry).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ipam.engine.pool_config import MAX_DOCUMENT_BYTES

#: Bodies up to this size are "small": they may use the whole budget.
SMALL_BODY_BYTES = 1 << 20
#: The extender verbs that carry node lists (names or full objects).
NODE_LIST_PATHS = frozenset({"/v1/filter", "/v1/prioritize"})


class BodyTooLarge(Exception):
    pass


class _NoBudget(Exception):
    pass


@dataclass(frozen=True, slots=True)
class BodyLimits:
    #: Full-node filter/prioritize bodies; also the share of the large bodies together.
    max_body_bytes: int
    #: Every other route.
    max_api_body_bytes: int
    #: All bodies in flight together.
    bytes_in_flight: int
    #: How long a body waits for its share of ``bytes_in_flight``.
    wait_seconds: float

    @classmethod
    def from_settings(cls, settings: Any) -> BodyLimits:
        return cls(max_body_bytes=settings.max_body_bytes,
                   max_api_body_bytes=min(settings.max_api_body_bytes, settings.max_body_bytes),
                   bytes_in_flight=max(settings.body_bytes_in_flight, settings.max_body_bytes),
                   wait_seconds=settings.http_body_timeout_seconds)

    def cap(self, path: str) -> int:
        if path in NODE_LIST_PATHS:
            return self.max_body_bytes
        if path == "/v1/pools/import":
            # The pool config's own limit (a larger document is refused by its parser), plus
            # room for the YAML of the ConfigMap around it.
            return min(MAX_DOCUMENT_BYTES + (64 << 10), self.max_body_bytes)
        return self.max_api_body_bytes


class BodyBudget:
    """Bytes of request bodies in flight in this process (shared by its listeners)."""

    def __init__(self, limits: BodyLimits) -> None:
        self.limits = limits
        self.in_flight = 0
        self.large_in_flight = 0
        self._changed = asyncio.Condition()

    def _fits(self, size: int, large: bool) -> bool:
        if self.in_flight + size > self.limits.bytes_in_flight:
            return False
        return not large or self.large_in_flight + size <= self.limits.max_body_bytes

    async def take(self, size: int, *, large: bool) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self._fits(size, large)),
                                       self.limits.wait_seconds)
            except TimeoutError:
                raise _NoBudget from None
            self.in_flight += size
            if large:
                self.large_in_flight += size

    async def give(self, size: int, *, large: bool) -> None:
        if not size:
            return
        async with self._changed:
            self.in_flight -= size
            if large:
                self.large_in_flight -= size
            self._changed.notify_all()


def budget_of(scope: Scope, limits: BodyLimits) -> BodyBudget:
    """The app's budget (``app.state.body_budget``: the extender listener's app shares the
    main app's state, so both listeners draw on one)."""
    state = scope["app"].state
    budget: BodyBudget | None = getattr(state, "body_budget", None)
    if budget is None:
        budget = state.body_budget = BodyBudget(limits)
    return budget


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.limits.cap(scope["path"])
        declared_raw = dict(scope.get("headers") or []).get(b"content-length")
        declared = int(declared_raw) if declared_raw is not None and declared_raw.isdigit() \
            else None
        if declared is not None and declared > cap:
            await self._reject(send, cap)
            return
        budget = budget_of(scope, self.limits)
        seen = taken = 0
        large = declared is not None and declared > SMALL_BODY_BYTES
        started = rejected = False
        if declared:
            try:
                await budget.take(declared, large=large)
            except _NoBudget:
                await self._busy(send)
                return
            taken = declared

        async def limited_receive() -> Message:
            nonlocal seen, taken, large, rejected
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    # Answer now: a route that parses the body (FastAPI) turns any failure
                    # of the read into its own 400/422, which must not be what is sent.
                    if not started and not rejected:
                        rejected = True
                        await self._reject(send, cap)
                    raise BodyTooLarge
                if seen > taken:  # chunked (or longer than declared): take as it comes
                    if not large and seen > SMALL_BODY_BYTES:
                        await budget.give(taken, large=False)
                        taken, large = 0, True
                    try:
                        await budget.take(seen - taken, large=large)
                    except _NoBudget:
                        if not started and not rejected:
                            rejected = True
                            await self._busy(send)
                        raise BodyTooLarge from None
                    taken = seen
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return  # the 413 (or 503) went out already
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started and not rejected:
                await self._reject(send, cap)
        finally:
            await budget.give(taken, large=large)

    async def _reject(self, send: Send, cap: int) -> None:
        await self._send(send, 413, {"error": {
            "code": "too_large", "message": f"request body exceeds {cap} bytes",
            "details": {"max_bytes": cap}}})

    async def _busy(self, send: Send) -> None:
        await self._send(send, 503, {"error": {
            "code": "unavailable", "message": "too many large request bodies in flight; "
                                              "retry", "details": {}}}, retry=True)

    @staticmethod
    async def _send(send: Send, status: int, body: dict[str, Any], *,
                    retry: bool = False) -> None:
        payload = orjson.dumps(body)
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(payload)).encode())]
        if retry:
            headers.append((b"retry-after", b"1"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
