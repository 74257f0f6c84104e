"""JSON responses rendered by orjson (fast on large filter replies; handles dataclasses).

Ours, not FastAPI's ``ORJSONResponse``: that one is deprecated (constructing it raises
``FastAPIDeprecationWarning`` in the FastAPI of tests/constraints.txt, an error under -W error),
and these bodies are built by hand (extender replies, error envelopes), with no response
model for FastAPI's own serialisation to apply.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class OrjsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


class JsonBytesResponse(Response):
    """A body already encoded as JSON (spliced from request spans), sent as it is."""

    media_type = "application/json"
