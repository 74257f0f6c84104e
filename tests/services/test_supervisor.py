"""The supervisor of background tasks: a failure is logged with its traceback, counted, backed
off and retried; a long-running task that ends is restarted; health shows in readiness and
metrics; only ``stop`` ends a task."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ipam.services.runtime import Readiness
from ipam.services.supervisor import PassFailed, Supervisor
from tests.service_harness import wait_until


class Flaky:
    """A pass that raises for its first ``failures`` calls."""

    def __init__(self, failures: int, exc: Exception | None = None) -> None:
        self.failures = failures
        self.exc = exc or PermissionError("403 Forbidden: pods is forbidden")
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc


async def test_a_failing_pass_is_logged_counted_backed_off_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    readiness = Readiness()
    supervisor = Supervisor([0.01, 0.02], readiness)
    step = Flaky(3)
    caplog.set_level(logging.INFO, "ipam.services.supervisor")
    supervisor.every("reconciler", 0.01, step, first=0)
    try:
        await wait_until(lambda: step.calls >= 5)
        health = supervisor.health["reconciler"]
        assert health.failures == 3 and health.consecutive == 0 and health.state == "running"
        assert "PermissionError: 403 Forbidden" in health.last_error
        # Only this supervisor's task: other tests' tasks share the session loop and logger.
        failed = [r for r in caplog.records if "failed; retrying" in r.getMessage()
                  and r.exc_info is not None and r.exc_info[1] is step.exc]
        assert len(failed) == 3 and all(r.exc_info is not None for r in failed)
        assert any("recovered after 3 failure(s)" in r.getMessage() for r in caplog.records)
        ok, detail = readiness.conditions["task:reconciler"]
        assert ok and "3 failure(s)" in detail
        metrics = {(m.name, s.labels.get("task")): s.value
                   for m in supervisor.collect() for s in m.samples}
        assert metrics[("ipam_task_failures", "reconciler")] == 3
        assert metrics[("ipam_task_up", "reconciler")] == 1
    finally:
        await supervisor.stop()
    assert supervisor.health["reconciler"].state == "stopped"
    assert readiness.conditions["task:reconciler"][0] is False


async def test_while_failing_the_task_is_down_in_metrics_but_the_replica_stays_ready() -> None:
    readiness = Readiness()
    supervisor = Supervisor([0.01], readiness)
    step = Flaky(10**9)
    supervisor.every("catalog-refresh", 0.01, step, first=0)
    try:
        await wait_until(lambda: step.calls >= 3)
        metrics = {m.name: s.value for m in supervisor.collect() for s in m.samples}
        assert metrics["ipam_task_up"] == 0 and metrics["ipam_task_failures"] >= 2
        ok, detail = readiness.conditions["task:catalog-refresh"]
        assert ok and detail.startswith("failing (") and "403 Forbidden" in detail
    finally:
        await supervisor.stop()


async def test_backoff_follows_the_schedule_and_a_success_resets_it() -> None:
    supervisor = Supervisor([0.01, 0.02, 0.04])
    step = Flaky(5)
    delays: list[int] = []
    original = supervisor._failed

    def spy(name: str, exc: Exception | None, ran: float = 0.0) -> float:
        delay = original(name, exc, ran)
        delays.append(round(delay * 100))
        return delay

    supervisor._failed = spy  # type: ignore[method-assign]
    supervisor.every("t", 0.01, step, first=0)
    try:
        await wait_until(lambda: step.calls >= 6)
    finally:
        await supervisor.stop()
    assert delays == [1, 2, 4, 4, 4]
    assert supervisor.health["t"].consecutive == 0


async def test_a_pass_that_reported_its_failure_is_logged_without_a_second_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor([0.01])
    step = Flaky(1, PassFailed("reconciler pass: ApiStatusError: 403 Forbidden"))
    supervisor.every("reconciler", 0.01, step, first=0)
    try:
        await wait_until(lambda: step.calls >= 2)
    finally:
        await supervisor.stop()
    (record,) = [r for r in caplog.records if "failed:" in r.getMessage()]
    assert record.exc_info is None and "403 Forbidden" in record.getMessage()
    assert supervisor.health["reconciler"].failures == 1


async def test_wake_runs_the_pass_now_and_a_wake_during_the_pass_runs_it_again() -> None:
    supervisor = Supervisor([0.01])
    wake = asyncio.Event()
    calls: list[int] = []
    release = asyncio.Event()

    async def step() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            await release.wait()

    supervisor.every("pool-configmap", 3600, step, wake=wake)
    try:
        await asyncio.sleep(0.05)
        assert calls == []  # an hour before the first pass, unless woken
        wake.set()
        await wait_until(lambda: len(calls) == 1)
        wake.set()  # a change while the pass runs
        release.set()
        await wait_until(lambda: len(calls) == 2)
        await asyncio.sleep(0.05)
        assert len(calls) == 2
    finally:
        await supervisor.stop()


async def test_a_long_running_task_that_raises_or_returns_is_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor([0.01])
    runs: list[str] = []
    forever = asyncio.Event()

    async def run() -> None:
        runs.append("start")
        if len(runs) == 1:
            raise RuntimeError("watch handler bug")
        if len(runs) == 2:
            return
        await forever.wait()

    supervisor.keep("informer-pods", run)
    try:
        await wait_until(lambda: len(runs) == 3)
        health = supervisor.health["informer-pods"]
        assert health.failures == 2 and health.state == "running"
        messages = [r.getMessage() for r in caplog.records]
        assert any("informer-pods failed" in m for m in messages)
        assert any("informer-pods ended unexpectedly" in m for m in messages)
    finally:
        await supervisor.stop()


async def test_stop_cancels_every_task_and_names_must_be_unique() -> None:
    supervisor = Supervisor([0.01])
    started = asyncio.Event()

    async def run() -> None:
        started.set()
        await asyncio.Event().wait()

    supervisor.keep("a", run)
    with pytest.raises(ValueError, match="already supervised"):
        supervisor.keep("a", run)
    await started.wait()
    await supervisor.stop()
    assert supervisor.health["a"].state == "stopped"
    with pytest.raises(ValueError):
        Supervisor([])
