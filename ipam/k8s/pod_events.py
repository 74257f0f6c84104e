"""Events on pods for the decisions that matter, so ``kubectl describe pod`` tells the story:
why filter held the pod back, that its kept address waits for a terminating pod, that bind
failed, which address it got, and whether its address was kept or freed when it went.

Fire and forget: filter and bind must not wait for an Event POST, so each is a task of its
own, at most ``MAX_IN_FLIGHT`` at once (beyond that they are dropped and counted), and the same
(pod, reason, message) is posted at most once per ``REPEAT_SECONDS``: the scheduler retries a
held-back pod every few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ipam.engine.pod import PodFacts
from ipam.k8s.events import EventRecorder

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 64
REPEAT_SECONDS = 60.0


class PodEvents:
    """Implements ``placement.PodNotices`` over an ``EventRecorder``."""

    def __init__(self, recorder: EventRecorder, *, repeat_seconds: float = REPEAT_SECONDS,
                 max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.recorder = recorder
        self.repeat_seconds = repeat_seconds
        self.max_in_flight = max_in_flight
        self.dropped = 0
        self._tasks: set[asyncio.Task[bool]] = set()
        self._last: dict[tuple[str, str, str], float] = {}

    def notice(self, pod: PodFacts, *, reason: str, message: str, warning: bool) -> None:
        now = time.monotonic()
        key = (pod.uid, reason, message)
        if now - self._last.get(key, -1e9) < self.repeat_seconds:
            return
        if len(self._tasks) >= self.max_in_flight:
            self.dropped += 1
            return
        self._last[key] = now
        if len(self._last) > 10_000:  # forget the oldest half; they are long past repeating
            for old in sorted(self._last, key=self._last.__getitem__)[:5_000]:
                del self._last[old]
        obj = {"metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid}}
        task = asyncio.get_running_loop().create_task(self.recorder.event(
            obj, kind="Pod", api_version="v1", reason=reason, message=message, warning=warning))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the Events in flight (shutdown, tests)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
