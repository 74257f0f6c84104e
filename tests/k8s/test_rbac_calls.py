"""Every Kubernetes API call the service makes is granted by manifests/rbac.yaml, and every
grant is used: the controllers run a full scenario against the fake API server, whose request
log is compared with the RBAC table the manifest tests check."""

from __future__ import annotations

from typing import Any

from tests.api.test_extender import bind_body, post
from tests.fakeapi.objects import make_configmap, make_pod, make_replicaset
from tests.fakeapi.server import FakeApiServer
from tests.k8s.test_controllers import Workloads, schedule
from tests.manifests.test_manifests import EXPECTED_API_CALLS
from tests.service_harness import RunningService, wait_until

POLICY = "k8s.v1.cni.galaxy.io/release-policy"


async def test_api_calls_match_the_cluster_role(controlled: RunningService,
                                                fake_apiserver: FakeApiServer) -> None:
    rt: Any = controlled.runtime
    w = Workloads(fake_apiserver)
    d = w.deployment("rbac-web", 1, "immutable")
    s = w.statefulset("rbac-db", 1, "immutable")
    rs = fake_apiserver.create("replicasets", make_replicaset("bare-rs"))
    pods = [w.deployment_pod(d, "aaaaa"), w.sts_pod(s, 0),
            fake_apiserver.create("pods", make_pod("bare-rs-x", owner=rs,
                                                   annotations={POLICY: "immutable"}))]
    for pod in pods:
        await schedule(controlled, pod)
    cold = fake_apiserver.create("pods", make_pod("no-filter-first"))
    assert (await post(controlled, "bind", bind_body(cold, "node-1"))).json() == {"Error": ""}
    assert str(await rt.placement.cluster.node_ip("node-0")) == "10.10.100.10"
    for pod in pods:
        fake_apiserver.delete("pods", pod["metadata"]["name"], namespace="default")
    await wait_until(lambda: rt.pod_watcher.released >= 3)
    await rt.reconciler.run_pass(apply=True)

    calls = fake_apiserver.api_calls()
    assert calls - EXPECTED_API_CALLS == set(), "calls the ClusterRole does not grant"
    assert EXPECTED_API_CALLS - calls == set(), "grants no code path uses"


async def test_pool_configmap_edits_take_effect(controlled: RunningService,
                                                fake_apiserver: FakeApiServer) -> None:
    rt: Any = controlled.runtime
    fake_apiserver.create("configmaps", make_configmap("floatingip-config", "kube-system", {
        "floatingips": '[{"routableSubnet":"10.10.100.0/24","ips":["10.11.128.1~10.11.128.9",'
                       '"10.11.130.1~10.11.130.9"],"subnet":"10.11.128.0/21",'
                       '"gateway":"10.11.135.254","vlan":1200}]'}))
    await wait_until(lambda: rt.controllers.pool_configmap.applied_version is not None)
    assert [str(r) for r in rt.catalog.pools[0].ranges] == ["10.11.128.1~10.11.128.9",
                                                            "10.11.130.1~10.11.130.9"]
    # A bad edit changes nothing and says why.
    fake_apiserver.patch("configmaps", "floatingip-config", {"data": {
        "floatingips": '[{"routableSubnet":"10.10.100.0/24","ips":["10.11.128.0/24"],'
                       '"subnet":"10.11.128.0/21","vlan":1200}]'}}, namespace="kube-system")
    await wait_until(lambda: rt.controllers.pool_configmap.last_error is not None)
    assert "is a CIDR" in rt.controllers.pool_configmap.last_error
    assert len(rt.catalog.pools[0].ranges) == 2
