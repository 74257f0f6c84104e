"""The reconciler's survey: rows streamed from one database snapshot taken before the pod
list, in batches; and the election-time pass, which waits until the informers have listed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import text

from ipam.engine.pod import PodFacts
from ipam.services.reconciler import Reconciler
from tests.api.conftest import service_settings
from tests.fakeapi.server import FakeApiServer
from tests.k8s.conftest import FAST, ServiceFactory
from tests.service_harness import RunningService, running_service, wait_until

#: Allocated rows of pods that do not exist, as a crash between bind and audit would leave.
ORPHANS = """
    INSERT INTO addresses (pool_id, address, state, owner_key, policy, pod_namespace, pod_name,
                           pod_uid, node, allocated_at, updated_at)
    SELECT (SELECT id FROM pools ORDER BY id LIMIT 1), CAST(:first AS inet) + g, 'allocated',
           'pod/default/gone-' || g, 'pod-delete', 'default', 'gone-' || g, 'gone-uid-' || g,
           'node-0', now(), now() - interval '1 hour'
    FROM generate_series(0, :n - 1) g
"""


def with_lister(svc: RunningService, lister: Any) -> Reconciler:
    r: Reconciler = svc.runtime.reconciler
    return Reconciler(r.db, r.allocator, r.lifecycle, r.workloads, lister, r.catalog, r.settings)


async def test_rows_are_read_as_they_were_before_the_pod_list(controlled: RunningService
                                                              ) -> None:
    """A bind whose transaction commits while the pods are being listed is not in the
    snapshot: its pod may be missing from a list taken before it existed, and must not look
    deleted (even with no grace period, and with the row's timestamp before the pass)."""
    reconciler: Reconciler = controlled.runtime.reconciler

    class Lister:
        def __init__(self, commit: Any) -> None:
            self.commit = commit

        async def list_pods(self) -> list[PodFacts]:
            pods = await reconciler.pods.list_pods()
            await self.commit()  # the bind commits after the list was taken
            return pods

    async with controlled.runtime.db.engine.connect() as conn:
        await conn.execute(text(ORPHANS), {"first": "10.11.135.200", "n": 1})
        report = await with_lister(controlled, Lister(conn.commit)).run_pass(apply=False)
    assert report.error is None
    assert report.rows_seen == 0 and report.findings == []
    later = await reconciler.run_pass(apply=False)
    assert [(f.kind, f.address) for f in later.findings] == [("pod_gone", "10.11.135.200")]


async def test_rows_are_streamed_in_batches(controlled: RunningService) -> None:
    async with controlled.runtime.db.engine.begin() as conn:
        await conn.execute(text(ORPHANS), {"first": "10.11.128.1", "n": 2040})
    reconciler: Reconciler = controlled.runtime.reconciler
    report = await reconciler.run_pass(apply=False)
    assert report.rows_seen == 2040
    found = [f for f in report.findings if f.kind == "pod_gone"]
    assert len(found) == 2040 and len({f.pod_uid for f in found}) == 2040
    assert found[0].address == "10.11.128.1" and found[-1].address == "10.11.135.248"
    assert all(f.action == "none" for f in found)


async def test_election_pass_waits_until_the_informers_have_listed(
    service_factory: ServiceFactory, fake_apiserver: FakeApiServer, db_url: str, tmp_path: Path
) -> None:
    """Not while the lists that readiness waits for are still running (at start-up it read
    every allocated row, 100,000 in the restart benchmark, competing with them)."""
    rule = fake_apiserver.faults.fail_next("GET", r"^/api/v1/nodes\?", 503, count=None)
    settings = service_settings(db_url, fake_apiserver, tmp_path, **FAST)
    async with running_service(settings) as svc:
        rt: Any = svc.runtime
        await wait_until(lambda: rt.leadership.is_leader)
        await wait_until(lambda: rule.hits >= 3)  # the node list failed, and was retried
        assert rt.reconciler.runs == 0
        assert not rt.readiness.conditions["watch:nodes"][0]
        fake_apiserver.faults.clear()
        await wait_until(lambda: rt.reconciler.runs >= 1)
        assert rt.readiness.conditions["watch:nodes"][0]
