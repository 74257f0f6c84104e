"""JSON responses rendered by orjson (fast on large filter replies; handles dataclasses).

Ours, not FastAPI's ``ORJSONResponse``: that one is deprecated (constructing it raises
``FastAPIDeprecationWarning`` in the FastAPI of tests/constraints.txt, an error under -W error),
and these bodies are built by hand (extender replies, error envelopes), with no response
model for FastAPI's own serialisation to apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class OrjsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


class JsonBytesResponse(Response):
    """A body already encoded as JSON (spliced from request spans), sent as it is."""

    media_type = "application/json"


class SplicedJsonResponse(Response):
    """JSON made of byte pieces joined by ``sep`` (a full-node filter reply: the passing
    nodes' spans of the request, a head glued to the first and a tail to the last), sent in
    batches of about ``batch`` bytes. Never joined whole: that copy of an up to 32 MiB reply
    was a third of the request's peak memory (docs/reliability.md)."""

    media_type = "application/json"

    def __init__(self, pieces: Sequence[bytes | memoryview | Any], *, sep: bytes = b",",
                 batch: int = 1 << 20) -> None:
        self.pieces, self.sep, self.batch = pieces, sep, batch
        self.status_code = 200
        self.background: BackgroundTask | None = None
        length = sum(len(p) for p in pieces) + len(sep) * max(len(pieces) - 1, 0)
        self.raw_headers = [(b"content-length", str(length).encode()),
                            (b"content-type", b"application/json")]

    @property
    def body(self) -> bytes:  # type: ignore[override]
        """The whole reply at once (tests; the service sends it in batches)."""
        return self.sep.join(self.pieces)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        batch: list[Any] = []
        size = 0
        for i, piece in enumerate(self.pieces):
            if i:
                batch.append(self.sep)
            batch.append(piece)
            size += len(piece)
            if size >= self.batch:
                await send({"type": "http.response.body", "body": b"".join(batch),
                            "more_body": True})
                batch, size = [], 0
        await send({"type": "http.response.body", "body": b"".join(batch)})
