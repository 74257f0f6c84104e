"""Many pods at once, and binds whose Binding the API server refuses."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.e2e_real.cluster import (
    IPAM_USER,
    NODES,
    REPORT,
    ROUTABLE,
    Cluster,
    eventually,
    is_bound,
    percentile,
    pod_manifest,
)
from tests.e2e_real.helpers import (
    assert_distinct,
    check_placement,
    consistent,
    wait_bound,
    wait_gone,
)

pytestmark = [pytest.mark.realkube, pytest.mark.timeout(900)]

MANUAL = "e2e-manual-scheduler"  # no scheduler runs under this name: the test is the scheduler


def test_100_pods_at_once(cluster: Cluster, ns: str) -> None:
    cluster.use_scheduler(node_cache_capable=True)
    names = [f"burst-{i:03d}" for i in range(100)]
    sent: dict[str, float] = {}

    def create(name: str) -> tuple[str, float]:
        start = time.monotonic()
        return cluster.kube.create_pod(ns, pod_manifest(name))["metadata"]["uid"], start

    began = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        for uid, start in pool.map(create, names):
            sent[uid] = start
    pods = wait_bound(cluster, ns, names, timeout=300)
    addresses = [check_placement(p) for p in pods.values()]
    assert_distinct(addresses)
    assert consistent(cluster, ns) == []
    assert len([r for r in cluster.db.taken(ns) if r["state"] == "allocated"]) == 100

    bound_at = cluster.kubelet.bound_at
    latency = [bound_at[uid] - start for uid, start in sent.items()]
    last = max(bound_at[uid] for uid in sent) - began
    REPORT["100 pods create->bound"] = (
        f"p50 {percentile(latency, 50) * 1000:.0f} ms, p99 {percentile(latency, 99) * 1000:.0f} "
        f"ms, max {max(latency) * 1000:.0f} ms; all 100 bound {last:.1f} s after the first "
        f"create (scheduler nodeCacheCapable=true, client qps 1000)")
    nodes = {p["spec"]["nodeName"] for p in pods.values()}
    assert nodes <= ROUTABLE


def extender_filter(cluster: Cluster, pod: dict[str, Any]) -> dict[str, Any]:
    """kube-scheduler's filter call (nodeCacheCapable: node names only), over its TLS."""
    with cluster.ipam.extender_client() as ext:
        reply = ext.post("/v1/filter", json={"Pod": pod, "Nodes": None,
                                              "NodeNames": sorted(NODES)})
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def extender_bind(cluster: Cluster, pod: dict[str, Any], node: str) -> dict[str, Any]:
    meta = pod["metadata"]
    with cluster.ipam.extender_client() as ext:
        reply = ext.post("/v1/bind", json={"PodName": meta["name"],
                                            "PodNamespace": meta["namespace"],
                                            "PodUID": meta["uid"], "Node": node})
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def refused_bindings(cluster: Cluster, ns: str, name: str) -> list[int]:
    """Response codes of ipam's refused Binding requests for this pod (audit log)."""
    return [e["responseStatus"]["code"] for e in cluster.plane.audit()
            if e["user"]["username"] == IPAM_USER and e["verb"] == "create"
            and e["objectRef"].get("subresource") == "binding"
            and e["objectRef"].get("namespace") == ns and e["objectRef"].get("name") == name
            and e.get("stage") == "ResponseComplete" and e["responseStatus"]["code"] >= 400]


def test_bind_refused_for_a_pod_deleted_after_filter_frees_at_once(
        cluster: Cluster, ns: str) -> None:
    """The pod is deleted between filter and bind (a finalizer keeps it visible, Terminating):
    the API server refuses the Binding, the reservation is undone before bind answers, and
    the re-created pod is then bound by the real scheduler."""
    cluster.use_scheduler(node_cache_capable=True)
    held = pod_manifest("victim", schedulerName=MANUAL)
    held["metadata"]["finalizers"] = ["e2e.example.com/hold"]
    pod = cluster.kube.create_pod(ns, held)
    passed = extender_filter(cluster, pod)
    assert sorted(passed["NodeNames"]) == sorted(ROUTABLE), passed
    cluster.kube.delete_pod(ns, "victim")
    terminating = cluster.kube.pod(ns, "victim")
    assert terminating is not None and terminating["metadata"].get("deletionTimestamp")

    answer = extender_bind(cluster, pod, "node-a1")
    assert answer["Error"], answer
    assert refused_bindings(cluster, ns, "victim"), "the Binding was never refused"
    assert cluster.db.query("SELECT host(address) AS a, state FROM addresses WHERE pod_uid = $1",
                            pod["metadata"]["uid"]) == []
    # Free at once (issue 13, item 7): not even quarantined, no container ever used it.
    assert cluster.db.taken(ns) == []

    cluster.kube.patch(f"/api/v1/namespaces/{ns}/pods/victim", {"metadata": {"finalizers": None}})
    wait_gone(cluster, ns, "victim", pod["metadata"]["uid"])
    again = cluster.kube.create_pod(ns, pod_manifest("victim"))
    bound = wait_bound(cluster, ns, ["victim"])["victim"]
    assert bound["metadata"]["uid"] == again["metadata"]["uid"]
    check_placement(bound)
    assert consistent(cluster, ns) == []


def test_bind_for_a_pod_recreated_after_filter_reserves_nothing(cluster: Cluster, ns: str) -> None:
    """Deleted and re-created under the same name between filter and bind: the stale bind
    (old UID) fails and leaves nothing; the new pod binds."""
    cluster.use_scheduler(node_cache_capable=True)
    pod = cluster.kube.create_pod(ns, pod_manifest("twin", schedulerName=MANUAL))
    assert extender_filter(cluster, pod)["NodeNames"]
    cluster.kube.delete_pod(ns, "twin", grace=0)
    wait_gone(cluster, ns, "twin", pod["metadata"]["uid"])
    cluster.kube.create_pod(ns, pod_manifest("twin"))
    answer = extender_bind(cluster, pod, "node-a2")
    assert answer["Error"], answer
    assert cluster.db.query("SELECT host(address) AS a FROM addresses WHERE pod_uid = $1",
                            pod["metadata"]["uid"]) == []
    bound = wait_bound(cluster, ns, ["twin"])["twin"]
    assert bound["metadata"]["uid"] != pod["metadata"]["uid"]
    check_placement(bound)
    assert consistent(cluster, ns) == []


def test_pods_deleted_while_being_scheduled_leave_nothing_reserved(
        cluster: Cluster, ns: str) -> None:
    cluster.use_scheduler(node_cache_capable=True)
    rng = random.Random(12)
    names = [f"short-{i:02d}" for i in range(40)]

    def create_then_delete(name: str) -> None:
        created = cluster.kube.create_pod(ns, pod_manifest(name))
        time.sleep(rng.random() * 0.5)
        cluster.kube.delete_pod(ns, name, grace=rng.choice([0, 30]),
                                uid=created["metadata"]["uid"])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create_then_delete, names))
    eventually(lambda: cluster.kube.pods(ns) == [], timeout=180, what="every pod gone")
    eventually(lambda: cluster.db.held(ns) == [], timeout=60,
               what=f"no address left held in {ns} (without the reconciler)")
    assert_distinct([r["address"] for r in cluster.db.taken()])
    assert not any(is_bound(p) for p in cluster.kube.pods(ns))
