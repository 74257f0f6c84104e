"""Supervision of the process's background tasks: none of them may die silently.

A task is either a periodic pass (``every``: the loop is here, one pass is the caller's small
testable function) or a long-running coroutine (``keep``, e.g. an informer's list+watch loop).
A pass or coroutine that raises is logged with its traceback, counted, backed off (the watch
backoff schedule, its last step repeating) and run again; a long-running coroutine that
returns is restarted the same way. Only ``stop`` ends a task.

Health is per task (``TaskHealth``): in ``/readyz`` as a ``task:<name>`` check and in
``/metrics`` (``ipam_task_up``, ``ipam_task_failures_total``). A failing task does not make
the replica unready: readiness is for what serving depends on (database, schema, watches), and
every replica would fail the same way (a missing RBAC grant, a bad pool config), taking the
extender down with it. The check stays ok while the task is supervised and says what fails;
alerts use ``ipam_task_up``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from ipam.metrics import Metric, counter, gauge
from ipam.services.runtime import Readiness

log = logging.getLogger(__name__)

Step = Callable[[], Awaitable[object]]


class PassFailed(Exception):
    """Raised by a pass that already logged why it failed: counted and backed off like any
    failure, logged on one line instead of a second traceback."""


@dataclass(slots=True)
class TaskHealth:
    name: str
    #: running | failing (waiting to run again after an error) | stopped
    state: str = "running"
    failures: int = 0
    #: Failures since the last pass that succeeded (or the last start of a ``keep`` task).
    consecutive: int = 0
    last_error: str = ""
    last_failure: float | None = None

    @property
    def up(self) -> bool:
        return self.state == "running"

    def detail(self) -> str:
        if self.state != "failing":
            suffix = f"; last error: {self.last_error}" if self.last_error else ""
            return f"{self.state}, {self.failures} failure(s){suffix}"
        return (f"failing ({self.consecutive} in a row, {self.failures} in all), "
                f"retrying: {self.last_error}")


class Supervisor:
    def __init__(self, backoff: Sequence[float], readiness: Readiness | None = None) -> None:
        if not backoff:
            raise ValueError("the backoff schedule needs at least one step")
        self.backoff = tuple(backoff)
        self.readiness = readiness
        self.health: dict[str, TaskHealth] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def every(self, name: str, seconds: float, step: Step, *, first: float | None = None,
              wake: asyncio.Event | None = None) -> None:
        """Run ``step`` every ``seconds`` (the first time after ``first``, default
        ``seconds``), or as soon as ``wake`` is set; after a failure, after the backoff."""
        self._spawn(name, lambda: self._periodic(name, seconds, step,
                                                 seconds if first is None else first, wake))

    def keep(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Keep the long-running ``run`` running: restart it whenever it raises or returns."""
        self._spawn(name, lambda: self._forever(name, run))

    def _spawn(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if name in self._tasks:
            raise ValueError(f"a task named {name!r} is already supervised")
        self.health[name] = TaskHealth(name)
        self._report(name)
        self._tasks[name] = asyncio.create_task(loop(), name=name)

    async def _periodic(self, name: str, seconds: float, step: Step, delay: float,
                        wake: asyncio.Event | None) -> None:
        while True:
            await _sleep(delay, wake)
            if wake is not None:
                wake.clear()  # before the pass: a wake during the pass runs it again
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self._failed(name, exc)
            else:
                self._succeeded(name)
                delay = seconds

    async def _forever(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        while True:
            started = time.monotonic()
            try:
                await run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self._failed(name, exc, time.monotonic() - started)
            else:
                delay = self._failed(name, None, time.monotonic() - started)
            await _sleep(delay, None)
            self.health[name].state = "running"
            self._report(name)

    def _failed(self, name: str, exc: Exception | None, ran: float = 0.0) -> float:
        """Log, count and report a failure; return how long to wait before running again.
        A ``keep`` task that ran longer than the longest backoff step had recovered: its
        backoff starts over."""
        health = self.health[name]
        if ran > self.backoff[-1]:
            health.consecutive = 0
        health.failures += 1
        health.consecutive += 1
        health.state = "failing"
        health.last_failure = time.time()
        delay = self.backoff[min(health.consecutive - 1, len(self.backoff) - 1)]
        if exc is None:
            health.last_error = "returned (it should run until stopped)"
            log.error("background task %s ended unexpectedly; restarting in %.1fs", name, delay)
        else:
            health.last_error = f"{type(exc).__name__}: {exc}"[:500]
            if isinstance(exc, PassFailed):
                log.error("background task %s failed: %s; retrying in %.1fs", name, exc, delay)
            else:
                log.error("background task %s failed; retrying in %.1fs", name, delay,
                          exc_info=exc)
        self._report(name)
        return delay

    def _succeeded(self, name: str) -> None:
        health = self.health[name]
        if health.state != "running":
            log.info("background task %s recovered after %d failure(s)", name,
                     health.consecutive)
        health.state, health.consecutive = "running", 0
        self._report(name)

    def _report(self, name: str) -> None:
        if self.readiness is not None:
            health = self.health[name]
            # ok while supervised: see the module docstring for why failing is not unready.
            self.readiness.set(f"task:{name}", health.state != "stopped", health.detail())

    def collect(self) -> list[Metric]:
        """Scrape-time task health."""
        tasks = list(self.health.values())
        return [
            gauge("ipam_task_up", "1 while a background task runs and its last pass did not "
                  "fail.", ["task"], (([t.name], float(t.up)) for t in tasks)),
            counter("ipam_task_failures", "Background task failures (each logged with its "
                    "traceback, backed off and retried).", ["task"],
                    (([t.name], float(t.failures)) for t in tasks)),
        ]

    async def stop(self) -> None:
        """Cancel every task and wait for it; an error other than the cancellation (there
        should be none: the loops catch everything) is logged, not swallowed."""
        tasks = list(self._tasks.items())
        for _, task in tasks:
            task.cancel()
        for name, task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("background task %s ended with an error at shutdown", name)
            self.health[name].state = "stopped"
            self._report(name)
        self._tasks.clear()


async def _sleep(seconds: float, wake: asyncio.Event | None) -> None:
    if wake is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), timeout=seconds)
