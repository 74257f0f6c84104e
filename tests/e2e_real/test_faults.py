"""Restarts in the middle of a burst: kube-scheduler (SIGTERM, waits for its lease) and the
ipam service (SIGKILL). Nothing may be lost, duplicated or bound without its reservation."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

import pytest

from tests.e2e_real.cluster import Cluster, eventually, is_bound, pod_manifest
from tests.e2e_real.helpers import assert_distinct, check_placement, consistent, wait_bound
from tests.e2e_real.test_scheduling import pending_stays_pending

pytestmark = [pytest.mark.realkube, pytest.mark.timeout(900)]


def burst_with(cluster: Cluster, ns: str, count: int, after_bound: int,
               fault: Callable[[], None]) -> list[str]:
    """Create ``count`` pods from a thread; run ``fault`` once ``after_bound`` are bound while
    the rest are still being created or scheduled. Returns the pod names."""
    names = [f"burst-{i:03d}" for i in range(count)]
    failures: list[BaseException] = []

    def create_all() -> None:
        try:
            for name in names:
                cluster.kube.create_pod(ns, pod_manifest(name))
        except BaseException as exc:
            failures.append(exc)

    creator = threading.Thread(target=create_all, name="burst-creator")
    creator.start()
    try:
        eventually(lambda: sum(is_bound(p) for p in cluster.kube.pods(ns)) >= after_bound,
                   timeout=180, what=f"{after_bound} pods bound before the fault",
                   interval=0.05)
        unbound = count - sum(is_bound(p) for p in cluster.kube.pods(ns))
        assert unbound > 0, "the burst ended before the fault: nothing was in flight"
        fault()
    finally:
        creator.join(timeout=300)
    assert not failures, failures
    return names


def test_scheduler_restarted_mid_burst_loses_nothing(cluster: Cluster, ns: str) -> None:
    """Restarted into nodeCacheCapable: false (full Node objects to the extender); the new
    scheduler waits for the old one's lease, as after a real restart."""
    cluster.use_scheduler(node_cache_capable=True)
    names = burst_with(cluster, ns, 80, 10,
                       lambda: cluster.plane.start_scheduler(node_cache_capable=False))
    pods = wait_bound(cluster, ns, names, timeout=300)
    assert_distinct([check_placement(p) for p in pods.values()])
    assert consistent(cluster, ns) == []
    assert len(cluster.db.taken(ns)) == 80


def test_full_node_mode_binds_routable_only_and_keeps_unroutable_pending(
        cluster: Cluster, ns: str) -> None:
    cluster.use_scheduler(node_cache_capable=False)
    names = [f"full-{i}" for i in range(8)]
    for name in names:
        cluster.kube.create_pod(ns, pod_manifest(name))
    pods = wait_bound(cluster, ns, names)
    assert_distinct([check_placement(p) for p in pods.values()])
    pending_stays_pending(cluster, ns, "nodeSelector")


def test_service_killed_mid_burst_and_restarted(cluster: Cluster, ns: str) -> None:
    cluster.use_scheduler(node_cache_capable=True)

    def crash_and_restart() -> None:
        cluster.ipam.kill()
        cluster.ipam.start()

    names = burst_with(cluster, ns, 80, 15, crash_and_restart)
    pods = wait_bound(cluster, ns, names, timeout=400)
    assert_distinct([check_placement(p) for p in pods.values()])
    assert_distinct([r["address"] for r in cluster.db.taken()])
    # A reservation whose Binding was cut off by the crash is re-used by the retried bind.
    with contextlib.suppress(AssertionError):
        eventually(lambda: not consistent(cluster, ns), timeout=60, what="consistent")
    assert consistent(cluster, ns) == []
    assert len(cluster.db.taken(ns)) == 80
