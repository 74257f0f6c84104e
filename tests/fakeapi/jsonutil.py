"""Fast JSON (orjson when installed, stdlib otherwise)."""

from __future__ import annotations

import importlib.util
import json
from typing import Any, cast

JSON = dict[str, Any]

if importlib.util.find_spec("orjson") is not None:  # ~5x faster on list responses and watch events
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    def loads(data: bytes | str) -> Any:
        return orjson.loads(data)

else:  # pragma: no cover - exercised only where orjson is absent

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    def loads(data: bytes | str) -> Any:
        return json.loads(data)


def clone(obj: Any) -> Any:
    """Deep copy of a JSON-shaped value (much faster than copy.deepcopy)."""
    return loads(dumps(obj))


def clone_obj(obj: JSON) -> JSON:
    """``clone`` for an object (typed)."""
    return cast(JSON, loads(dumps(obj)))
