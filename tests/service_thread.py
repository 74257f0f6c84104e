"""The real service in a thread with its own event loop, for synchronous test drivers
(schemathesis, hypothesis state machines) that cannot share pytest-asyncio's loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ipam.settings import Settings
from tests.service_harness import RunningService, running_service


@contextmanager
def service_in_thread(settings: Settings) -> Iterator[RunningService]:
    ready: dict[str, RunningService | BaseException] = {}
    started = threading.Event()
    loop = asyncio.new_event_loop()
    stop: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        try:
            async with running_service(settings) as svc:
                ready["svc"] = svc
                started.set()
                await stop.wait()
        except BaseException as exc:
            ready["error"] = exc
            started.set()
            raise

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()),
                              name="ipam-service", daemon=True)
    thread.start()
    started.wait(60)
    if "error" in ready:
        raise AssertionError(f"service failed to start: {ready['error']!r}")
    try:
        svc = ready["svc"]
        assert isinstance(svc, RunningService)
        yield svc
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        loop.close()
