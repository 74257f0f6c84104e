"""Every background loop survives its failures, injected for real: a 403 on the reconciler's pod
list (fake API server), the catalog refresh's table gone (PostgreSQL), a ConfigMap change seen
while following. Each failure is logged, counted in /metrics, shown in /readyz, and the loop
runs again once the cause is gone."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import text

from ipam.services.leadership import Leadership
from ipam.storage.database import Database
from tests.api.test_metrics import samples
from tests.fakeapi.objects import make_configmap
from tests.fakeapi.server import FakeApiServer
from tests.k8s.conftest import ServiceFactory
from tests.service_harness import RunningService, wait_until

#: The reconciler's own pod list (paged), not the pods informer's watch.
POD_LIST = r"^/api/v1/pods\?(?!.*\bwatch=true)"
#: Adds a second range to the fixture's pool.
GROWN = ('[{"routableSubnet":"10.10.100.0/24","ips":["10.11.128.1~10.11.128.9",'
         '"10.11.130.1~10.11.130.9"],"subnet":"10.11.128.0/21","gateway":"10.11.135.254",'
         '"vlan":1200}]')


def task_metrics(text_: str, task: str) -> dict[str, float]:
    return {name: value for (name, labels), value in samples(text_).items()
            if dict(labels).get("task") == task}


async def readyz(svc: RunningService) -> tuple[int, dict[str, Any]]:
    resp = await svc.client.get("/readyz")
    return resp.status_code, resp.json()["checks"]


async def test_403_on_the_pod_list_does_not_end_the_reconcile_loop(
    service_factory: ServiceFactory, fake_apiserver: FakeApiServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fast = {"interval_seconds": 0.05, "grace_seconds": 0, "unbound_grace_seconds": 30}
    async with service_factory(reconciler=fast) as svc:
        rt: Any = svc.runtime
        reconciler, supervisor = rt.reconciler, rt.controllers.supervisor
        await wait_until(lambda: reconciler.runs >= 1 and reconciler.last_report.error is None)
        rule = fake_apiserver.faults.fail_next(
            "GET", POD_LIST, 403, count=3, reason="Forbidden",
            message='pods is forbidden: User "system:serviceaccount:kube-system:ipam" '
                    'cannot list resource "pods" in API group "" at the cluster scope')
        health = supervisor.health["reconciler"]
        await wait_until(lambda: rule.hits == 3 and health.failures == 3)
        assert "ApiStatusError: 403 Forbidden: pods is forbidden" in health.last_error
        failed = [r for r in caplog.records if r.getMessage() == "reconciler pass failed"]
        assert len(failed) == 3 and all(r.exc_info is not None for r in failed)
        status, checks = await readyz(svc)
        assert status == 200 and "403 Forbidden" in checks["task:reconciler"]["detail"]
        # The fault is gone: the same loop passes again.
        runs = reconciler.runs
        await wait_until(lambda: reconciler.runs > runs + 1
                         and reconciler.last_report.error is None)
        assert health.state == "running" and health.failures == 3
        got = task_metrics((await svc.client.get("/metrics")).text, "reconciler")
        assert got == {"ipam_task_up": 1.0, "ipam_task_failures_total": 3.0}


async def test_catalog_refresh_failure_is_retried_until_the_database_is_back(
    service_factory: ServiceFactory,
) -> None:
    async with service_factory() as svc:
        rt: Any = svc.runtime
        health = rt.controllers.supervisor.health["catalog-refresh"]
        refreshed = rt.catalog.refreshed_at
        await wait_until(lambda: rt.catalog.refreshed_at != refreshed)
        async with rt.db.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE pools RENAME TO pools_gone"))
        try:
            await wait_until(lambda: health.failures >= 2)
            # What /metrics serves (scraped over HTTP once the table is back: the route's own
            # pool usage query fails without it).
            got = {(s.name, s.labels.get("task")): s.value
                   for m in rt.controllers.collect() for s in m.samples}
            assert got[("ipam_task_up", "catalog-refresh")] == 0
            assert got[("ipam_task_failures_total", "catalog-refresh")] >= 2
            status, checks = await readyz(svc)
            assert checks["task:catalog-refresh"]["ok"]
            assert checks["task:catalog-refresh"]["detail"].startswith("failing (")
        finally:
            async with rt.db.engine.begin() as conn:
                await conn.execute(text("ALTER TABLE pools_gone RENAME TO pools"))
        refreshed = rt.catalog.refreshed_at
        await wait_until(lambda: rt.catalog.refreshed_at != refreshed)
        assert health.state == "running"
        status, _ = await readyz(svc)
        assert status == 200
        got = task_metrics((await svc.client.get("/metrics")).text, "catalog-refresh")
        assert got["ipam_task_up"] == 1 and got["ipam_task_failures_total"] == health.failures


async def test_configmap_change_seen_while_following_is_applied_when_elected(
    service_factory: ServiceFactory, fake_apiserver: FakeApiServer, db_url: str
) -> None:
    holder_db = Database(db_url, pool_size=1, max_overflow=0)
    holder = Leadership(holder_db, retry_seconds=3600)
    assert await holder.step()  # another replica leads, and leaves later
    try:
        async with service_factory() as svc:
            rt: Any = svc.runtime
            pool_cm, leadership = rt.controllers.pool_configmap, rt.leadership
            cm = fake_apiserver.create("configmaps", make_configmap(
                "floatingip-config", "kube-system", {"floatingips": GROWN}))
            version = cm["metadata"]["resourceVersion"]
            await wait_until(lambda: pool_cm.refreshed_version == version)
            assert not leadership.is_leader and pool_cm.applied_version is None
            assert [str(r) for r in rt.catalog.pools[0].ranges] == ["10.11.128.1~10.11.135.253"]
            await holder.resign()
            await wait_until(lambda: pool_cm.applied_version == version)
            assert leadership.is_leader
            assert [str(r) for r in rt.catalog.pools[0].ranges] == [
                "10.11.128.1~10.11.128.9", "10.11.130.1~10.11.130.9"]
    finally:
        await holder.resign()
        await holder_db.dispose()


async def test_shutdown_stops_every_task(service_factory: ServiceFactory,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "ipam.services.supervisor")
    async with service_factory() as svc:
        rt: Any = svc.runtime
        supervisor = rt.controllers.supervisor
        names = set(supervisor.health)
        assert names == {"catalog-refresh", "informer-nodes", "informer-pods",
                         "informer-pool-configmap", "pool-configmap", "leadership",
                         "quarantine-sweep",
                         "reconciler"}
    assert {h.state for h in supervisor.health.values()} == {"stopped"}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
