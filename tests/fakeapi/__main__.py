"""``python -m tests.fakeapi --port N``: serve until SIGTERM/SIGINT.

Prints one line ``http://127.0.0.1:PORT`` to stdout once listening (port 0
picks a free one). Control it over HTTP under ``/_fake/``: ``GET state``,
``POST compact``, ``POST drop-watches?abrupt=false``, ``POST bookmarks``,
``POST faults`` (JSON: action fail|hang|reset, method, path_regex, status,
count, seconds, retry_after), ``DELETE faults``, ``GET/DELETE requests``,
``POST objects/<resource>`` (seed an object directly).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from .server import FakeApiServer, new_event_loop
from .store import Settings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.fakeapi",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument(
        "--history", type=int, default=Settings.history_size, help="watch events kept per resource"
    )
    p.add_argument("--bookmark-interval", type=float, default=Settings.bookmark_interval)
    p.add_argument("--graceful-pod-deletion", action="store_true")
    p.add_argument(
        "--no-request-log",
        action="store_true",
        help="do not keep the request log (long benchmarks)",
    )
    args = p.parse_args(argv)
    settings = Settings(
        history_size=args.history,
        bookmark_interval=args.bookmark_interval,
        graceful_pod_deletion=args.graceful_pod_deletion,
        record_requests=not args.no_request_log,
    )
    server = FakeApiServer(args.host, args.port, settings=settings)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.stop_from_loop)
        task = asyncio.create_task(server.serve())
        while not server.ready:
            if task.done():
                await task
            await asyncio.sleep(0.01)
        print(server.url, flush=True)
        await task

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
