"""The extender pauses cyclic garbage collection for a request's work, never for the wait on
its body: a client that starts a body and never finishes it must not keep the collector off
for the whole process (issue 14, item 9)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import orjson
import pytest

from ipam.app import create_app
from tests.conftest import FIXTURES
from tests.service_harness import RunningService


@pytest.mark.parametrize("verb", ["filter", "prioritize"])
async def test_the_collector_stays_on_while_a_body_is_awaited(service: RunningService,
                                                             verb: str) -> None:
    app = create_app(service.runtime.settings, runtime=service.runtime)
    body = (FIXTURES / "extender/filter-request-nodecache.json").read_bytes()
    waiting, more = asyncio.Event(), asyncio.Event()
    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": body[:10], "more_body": True}
        waiting.set()  # the handler is now waiting for the rest of the body
        await more.wait()
        return {"type": "http.request", "body": body[10:], "more_body": False}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": f"/v1/{verb}",
             "raw_path": f"/v1/{verb}".encode(), "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 9040)}
    assert gc.isenabled()
    task = asyncio.create_task(app(scope, receive, send))
    await asyncio.wait_for(waiting.wait(), timeout=30)
    assert gc.isenabled(), "the collector was turned off before the body arrived"
    more.set()
    await asyncio.wait_for(task, timeout=30)
    assert gc.isenabled()
    assert sent[0]["status"] == 200
    reply = orjson.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert reply if verb == "prioritize" else reply["Error"] == ""
