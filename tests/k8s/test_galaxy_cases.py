"""galaxy-ipam's own scheduler-plugin and pool unit tests, re-expressed black-box.

Each test is named after the galaxy test it re-expresses (tkestack/galaxy,
pkg/ipam/schedulerplugin/*_test.go and pkg/ipam/floatingip/*_test.go) and runs galaxy's own
pool config (``utils.TestConfig``) and node addresses through the extender, the pod watcher
and the reconciler, against the fake API server and real PostgreSQL. The galaxy cases already
covered elsewhere, and the ones that do not apply, are listed in docs/galaxy-compatibility.md.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_extender import bind_body, filter_body, post
from tests.fakeapi.objects import (
    make_deployment,
    make_node,
    make_pod,
    make_replicaset,
    make_statefulset,
)
from tests.fakeapi.server import FakeApiServer
from tests.k8s.conftest import ServiceFactory
from tests.k8s.test_controllers import rows, schedule
from tests.service_harness import RunningService, wait_until

ARGS = "k8s.v1.cni.galaxy.io/args"
POLICY = "k8s.v1.cni.galaxy.io/release-policy"
POOL = "tke.cloud.tencent.com/eni-ip-pool"
HASH = "5d8f7c9b6"

#: galaxy's pkg/ipam/utils/test_helper.go TestConfig, verbatim (host bits in nodeSubnets too).
GALAXY_CONFIG: list[dict[str, Any]] = [
    {"routableSubnet": "10.49.27.0/24", "ips": ["10.49.27.205", "10.49.27.216~10.49.27.218"],
     "subnet": "10.49.27.0/24", "gateway": "10.49.27.1", "vlan": 2},
    {"routableSubnet": "10.173.13.0/24",
     "ips": ["10.173.13.2", "10.173.13.10~10.173.13.13", "10.173.13.15"],
     "subnet": "10.173.13.0/24", "gateway": "10.173.13.1", "vlan": 2},
    {"routableSubnet": "10.180.1.2/32", "ips": ["10.180.154.2~10.180.154.3"],
     "subnet": "10.180.154.0/24", "gateway": "10.180.154.1", "vlan": 3},
    {"routableSubnet": "10.180.1.3/32", "ips": ["10.180.154.7~10.180.154.8"],
     "subnet": "10.180.154.0/24", "gateway": "10.180.154.1", "vlan": 3},
    {"nodeSubnets": ["10.0.1.2/24", "10.0.2.2/24"], "ips": ["10.0.70.2~10.0.70.20"],
     "subnet": "10.0.70.0/24", "gateway": "10.0.70.1"},
    {"nodeSubnets": ["10.49.28.0/26", "10.49.29.0/24"], "ips": ["10.0.80.2~10.0.80.4"],
     "subnet": "10.0.80.0/24", "gateway": "10.0.80.1"},
    {"nodeSubnets": ["10.49.28.0/26"], "ips": ["10.0.81.2~10.0.81.4"],
     "subnet": "10.0.81.0/24", "gateway": "10.0.81.1"},
]
#: galaxy's test nodes (floatingip_plugin_test.go, filter_test.go): node1 is drained, node2
#: is in no pool's subnet, node3/node4 are good, node5/node6 route the nodeSubnets pools.
GALAXY_NODES = {"node1": "10.180.1.3", "node2": "10.48.28.2", "node3": "10.49.27.3",
                "node4": "10.173.13.4", "node5": "10.49.28.3", "node6": "10.49.29.3"}
FOUR = ["node1", "node2", "node3", "node4"]
SIX = list(GALAXY_NODES)
#: Not galaxy's: a node in 10.0.1.0/24, whose pool (19 addresses) holds the many addresses
#: that galaxy's cases take one fresh plugin each for.
ROOMY = ("node7", "10.0.1.7")


@pytest.fixture
async def galaxy(service_factory: ServiceFactory, fake_apiserver: FakeApiServer,
                 tmp_path: Path) -> AsyncIterator[RunningService]:
    """The service with galaxy's TestConfig and galaxy's six nodes, leading."""
    pools = galaxy_cluster(fake_apiserver, tmp_path)
    async with service_factory(pools_file=pools) as svc:
        await wait_until(lambda: svc.runtime.leadership.is_leader
                         and all(svc.runtime.nodes.known(n) for n in [*GALAXY_NODES, ROOMY[0]]))
        yield svc


def galaxy_cluster(fake: FakeApiServer, tmp_path: Path) -> Path:
    """galaxy's nodes (and ``ROOMY``) in the fake API server; the path of its pool config."""
    for name, ip in [*GALAXY_NODES.items(), ROOMY]:
        fake.create("nodes", make_node(name, internal_ip=ip))
    pools = tmp_path / "galaxy-testconfig.json"
    pools.write_text(json.dumps(GALAXY_CONFIG))
    return pools


# -- helpers ----------------------------------------------------------------------------------
def released(svc: RunningService) -> int:
    return int(svc.runtime.pod_watcher.released)


async def delete_pod(svc: RunningService, fake: FakeApiServer, pod: dict[str, Any]) -> None:
    """Delete the pod and wait until the watcher has freed or kept its addresses."""
    before = released(svc)
    meta = pod["metadata"]
    fake.delete("pods", meta["name"], namespace=meta.get("namespace", "default"))
    await wait_until(lambda: released(svc) > before)


async def outcome(svc: RunningService, pod: dict[str, Any], nodes: list[str]
                  ) -> tuple[list[str], list[str]]:
    """(passed, failed) node names of one filter call, sorted, as galaxy's checkFilterResult."""
    reply = (await post(svc, "filter", filter_body(pod, nodes))).json()
    assert not reply.get("Error"), reply
    return sorted(reply["NodeNames"] or []), sorted(reply["FailedNodes"] or {})


async def addresses(svc: RunningService, pod: dict[str, Any]) -> list[str]:
    held = await svc.runtime.allocator.pod_addresses(pod["metadata"]["uid"])
    return [str(r.address) for r in held]


async def bind(svc: RunningService, pod: dict[str, Any], node: str) -> list[str]:
    """Filter on ``node`` alone, then bind there; the pod's addresses in slot order."""
    reply = (await post(svc, "filter", filter_body(pod, [node]))).json()
    assert reply["NodeNames"] == [node], reply
    answer = (await post(svc, "bind", bind_body(pod, node))).json()
    assert answer == {"Error": ""}, answer
    return await addresses(svc, pod)


async def state(svc: RunningService, address: str) -> tuple[str, str | None] | None:
    """(state, owner key) of an address, ``None`` when it is free."""
    row = (await rows(svc)).get(address)
    return None if row is None else (row[0], row[1])


async def drain(svc: RunningService, fake: FakeApiServer, node: str, count: int) -> None:
    """galaxy's drainNode: take every address routable from ``node``."""
    for i in range(count):
        await schedule(svc, fake.create("pods", make_pod(f"drain-{node}-{i}", "kube-system")),
                       node)
    pod = fake.create("pods", make_pod(f"drain-{node}-probe", "kube-system"))
    assert (await outcome(svc, pod, [node]))[0] == []


def sts_pod(fake: FakeApiServer, sts: dict[str, Any], ordinal: int, *,
            policy: str | None = None, args: Any = None, eni_ips: int = 1) -> dict[str, Any]:
    annotations: dict[str, str] = {}
    if policy:
        annotations[POLICY] = policy
    if args is not None:
        annotations[ARGS] = json.dumps(args)
    meta = sts["metadata"]
    return fake.create("pods", make_pod(f"{meta['name']}-{ordinal}", meta["namespace"],
                                        owner=sts, annotations=annotations or None,
                                        eni_ips=eni_ips))


def statefulset(fake: FakeApiServer, name: str, replicas: int = 1,
                namespace: str = "default") -> dict[str, Any]:
    return fake.create("statefulsets", make_statefulset(name, namespace, replicas=replicas))


class Deployment:
    """A Deployment, its ReplicaSet and pods shaped as their controllers make them."""

    def __init__(self, fake: FakeApiServer, name: str, replicas: int,
                 annotations: dict[str, str] | None = None, namespace: str = "default"
                 ) -> None:
        self.fake, self.name, self.namespace = fake, name, namespace
        self.annotations = annotations or {}
        self.dep = fake.create("deployments", make_deployment(name, namespace,
                                                              replicas=replicas))
        self.rs = fake.create("replicasets", make_replicaset(
            f"{name}-{HASH}", namespace, replicas=replicas, owner=self.dep,
            labels={"pod-template-hash": HASH}))

    def pod(self, suffix: str) -> dict[str, Any]:
        return self.fake.create("pods", make_pod(
            f"{self.name}-{HASH}-{suffix}", self.namespace, owner=self.rs,
            labels={"pod-template-hash": HASH}, annotations=self.annotations or None))

    def scale(self, replicas: int) -> None:
        for kind, name in (("deployments", self.name), ("replicasets", f"{self.name}-{HASH}")):
            self.fake.patch(kind, name, {"spec": {"replicas": replicas}},
                            namespace=self.namespace)


# -- pool config (floatingip_test.go, ipam_crd_test.go) ----------------------------------------
async def test_galaxy_TestConfigurePool(galaxy: RunningService) -> None:
    """TestTestConfig + TestConfigurePool: galaxy's TestConfig loads as it is (host bits in
    ``nodeSubnets`` masked) into 7 pools with 39 addresses, none taken."""
    pools = galaxy.runtime.catalog.pools
    assert len(pools) == 7
    assert sum(p.size for p in pools) == 39
    assert [str(n) for n in pools[4].node_subnets] == ["10.0.1.0/24", "10.0.2.0/24"]
    assert await rows(galaxy) == {}


async def test_galaxy_TestNodeSubnet_and_TestAllocateInSubnet(
        galaxy: RunningService, fake_apiserver: FakeApiServer) -> None:
    """TestNodeSubnet: which node addresses a pool's subnets route (/32 routable subnets, a
    /26 boundary, two nodeSubnets of one pool); TestAllocateInSubnet: a bind there takes an
    address of that pool, and a node in no pool's subnet gets none."""
    extra = {"n-27-0": "10.49.27.0", "n-13-1": "10.173.13.1", "n-180-2": "10.180.1.2",
             "n-180-4": "10.180.1.4", "n-1-0": "10.0.1.0", "n-2-4": "10.0.2.4",
             "n-28-63": "10.49.28.63", "n-28-64": "10.49.28.64", "n-14-9": "10.173.14.9"}
    for name, ip in extra.items():
        fake_apiserver.create("nodes", make_node(name, internal_ip=ip))
    await wait_until(lambda: all(galaxy.runtime.nodes.known(n) for n in extra))
    probe = fake_apiserver.create("pods", make_pod("probe", "ns1"))
    passed, failed = await outcome(galaxy, probe, list(extra))
    assert passed == sorted(["n-27-0", "n-13-1", "n-180-2", "n-1-0", "n-2-4", "n-28-63"])
    assert failed == sorted(["n-180-4", "n-28-64", "n-14-9"])
    expect = {"node4": "10.173.13.", "n-180-2": "10.180.154.", "node1": "10.180.154.",
              "n-1-0": "10.0.70.", "n-2-4": "10.0.70.", "node6": "10.0.80."}
    got = {}
    for i, node in enumerate(expect):
        (address,) = await bind(galaxy, fake_apiserver.create("pods", make_pod(f"p{i}", "ns1")),
                                node)
        got[node] = address
    assert all(got[n].startswith(prefix) for n, prefix in expect.items()), got
    assert got["n-180-2"] in ("10.180.154.2", "10.180.154.3")
    assert got["node1"] in ("10.180.154.7", "10.180.154.8")
    reply = (await post(galaxy, "bind", bind_body(
        fake_apiserver.create("pods", make_pod("nowhere", "ns1")), "n-14-9"))).json()
    assert reply["Error"], reply  # ErrNoEnoughIP


async def test_galaxy_TestAllocateInMultipleSubnet(
        galaxy: RunningService, fake_apiserver: FakeApiServer) -> None:
    """node5's subnet (10.49.28.0/26) is routed by two pools: binds there use both, then the
    node is exhausted."""
    got = [(await bind(galaxy, fake_apiserver.create("pods", make_pod(f"m{i}", "ns1")),
                       "node5"))[0] for i in range(6)]
    assert {a.rsplit(".", 1)[0] for a in got} == {"10.0.80", "10.0.81"}
    assert len(set(got)) == 6
    last = fake_apiserver.create("pods", make_pod("m6", "ns1"))
    passed, failed = await outcome(galaxy, last, ["node5"])
    assert (passed, failed) == ([], ["node5"])


async def test_galaxy_TestAllocateInSubnetsAndIPRange(
        galaxy: RunningService, fake_apiserver: FakeApiServer) -> None:
    """request_ip_range through bind on node3 (10.49.27.0/24): one address per group, the
    same range in two groups gives two addresses, alternatives are tried in order, and a
    group no pool routable from the node holds takes nothing at all."""
    cases: list[tuple[str, list[list[str]], list[str] | None]] = [
        ("node3", [["10.49.27.217~10.49.27.218"], ["10.49.27.217~10.49.27.218"]],
         ["10.49.27.217", "10.49.27.218"]),
        ("node3", [["10.49.27.205", "10.49.27.218"]], ["10.49.27.205"]),
        ("node3", [["10.49.27.205"], ["10.49.27.218"]], ["10.49.27.205", "10.49.27.218"]),
        ("node3", [["10.49.27.216"], ["10.49.27.217"], ["10.49.27.218"]],
         ["10.49.27.216", "10.49.27.217", "10.49.27.218"]),
        ("node3", [["10.49.27.216"], ["10.50.0.1"]], None),  # 10.50.0.1 is in no pool
        ("node4", [["10.49.27.216"]], None),  # node4's pool does not hold it
    ]
    for i, (node, groups, want) in enumerate(cases):
        pod = fake_apiserver.create("pods", make_pod(
            f"r{i}", "ns1", eni_ips=len(groups),
            annotations={ARGS: json.dumps({"request_ip_range": groups})}))
        if want is None:
            assert (await outcome(galaxy, pod, [node]))[0] == [], f"case {i}"
            reply = (await post(galaxy, "bind", bind_body(pod, node))).json()
            assert reply["Error"], f"case {i}: {reply}"
            assert await rows(galaxy) == {}, f"case {i}: all or nothing"
            continue
        assert await bind(galaxy, pod, node) == want, f"case {i}"
        await delete_pod(galaxy, fake_apiserver, pod)
        assert await rows(galaxy) == {}, f"case {i}"


# -- filter (filter_test.go) --------------------------------------------------------------------
async def test_galaxy_TestFilter(galaxy: RunningService, fake_apiserver: FakeApiServer) -> None:
    """A pod without the eni-ip resource passes every node; one with it passes the nodes with
    a free address (not the drained node1, not node2 outside every pool); a StatefulSet pod
    whose ordinal keeps 10.173.13.2 passes only node4; another pod passes both good nodes."""
    await drain(galaxy, fake_apiserver, "node1", 2)
    plain = fake_apiserver.create("pods", make_pod("pod1", "ns1", eni_ips=None))
    assert await outcome(galaxy, plain, FOUR) == (FOUR, [])
    sts = statefulset(fake_apiserver, "pod1", namespace="ns1")
    pod = sts_pod(fake_apiserver, sts, 0, policy="immutable")
    assert await outcome(galaxy, pod, FOUR) == (["node3", "node4"], ["node1", "node2"])
    assert await bind(galaxy, pod, "node4") == ["10.173.13.2"]
    await delete_pod(galaxy, fake_apiserver, pod)
    again = sts_pod(fake_apiserver, sts, 0, policy="immutable")
    assert await outcome(galaxy, again, FOUR) == (["node4"], ["node1", "node2", "node3"])
    other = sts_pod(fake_apiserver, statefulset(fake_apiserver, "pod2", namespace="ns1"), 1,
                    policy="immutable")
    assert await outcome(galaxy, other, FOUR) == (["node3", "node4"], ["node1", "node2"])


async def test_galaxy_TestFilterRequestIPRange(
        galaxy: RunningService, fake_apiserver: FakeApiServer) -> None:
    """galaxy's seven request_ip_range cases on its six nodes: groups are ANDed, the
    alternatives inside a group ORed, across pools with several node subnets; a pod that
    already holds its requested addresses passes only where they route."""
    sts = statefulset(fake_apiserver, "pod1", namespace="ns1")
    cases: list[tuple[list[list[str]], list[str]]] = [
        ([["10.49.27.205"], ["10.49.27.216~10.49.27.218"]], ["node3"]),
        ([["10.0.80.2~10.0.80.4"], ["10.0.81.2"]], ["node5"]),
        ([["10.0.80.2~10.0.80.4"]], ["node5", "node6"]),
        ([["10.49.27.205"], ["10.0.80.2~10.0.80.4"]], []),
        ([["10.49.27.205", "10.0.80.2~10.0.80.4"]], ["node3", "node5", "node6"]),
        ([["10.49.27.216~10.49.27.218", "10.0.80.2~10.0.80.4"],
          ["10.49.27.216~10.49.27.218", "10.0.80.2~10.0.80.4"]], ["node3", "node5", "node6"]),
    ]
    got, want = {}, {}
    for i, (groups, passing) in enumerate(cases):
        pod = sts_pod(fake_apiserver, sts, 0, args={"request_ip_range": groups})
        got[i] = await outcome(galaxy, pod, SIX)
        want[i] = (passing, sorted(set(SIX) - set(passing)))
        fake_apiserver.delete("pods", "pod1-0", namespace="ns1")
    assert got == want
    assert await rows(galaxy) == {}  # filter reserves nothing
    # The last case with its addresses already allocated on node6 (galaxy's preHook): the
    # StatefulSet pod keeps them (immutable) and its next incarnation passes only where
    # both route.
    groups = cases[-1][0]
    first = sts_pod(fake_apiserver, sts, 0, policy="immutable",
                    args={"request_ip_range": groups})
    held = await bind(galaxy, first, "node6")
    assert [a.rsplit(".", 1)[0] for a in held] == ["10.0.80", "10.0.80"]
    await delete_pod(galaxy, fake_apiserver, first)
    again = sts_pod(fake_apiserver, sts, 0, policy="immutable",
                    args={"request_ip_range": groups})
    assert await outcome(galaxy, again, SIX) == (
        ["node5", "node6"], ["node1", "node2", "node3", "node4"])
    assert await bind(galaxy, again, "node5") == held


async def test_galaxy_TestFilterForDeploymentIPPool(
        galaxy: RunningService, fake_apiserver: FakeApiServer) -> None:
    """Two Deployments in two namespaces share the named pool ``pool1``. galaxy: the pool's
    kept address pins the next pool pod, of either Deployment, to the nodes it routes
    (``getAvailableSubnet``: unused pool addresses -> reserve in their subnets only); with
    nothing kept, a pool pod passes every node with room."""
    await drain(galaxy, fake_apiserver, "node1", 2)
    dp = Deployment(fake_apiserver, "dp", 1, {POOL: "pool1"}, namespace="ns1")
    dp2 = Deployment(fake_apiserver, "dp2", 1, {POOL: "pool1"}, namespace="ns2")
    good, bad = ["node3", "node4"], ["node1", "node2"]
    got: dict[str, object] = {}
    want: dict[str, object] = {}
    # 1. normal filter gets all good nodes
    pod = dp.pod("yyyyy")
    got["1"] = await outcome(galaxy, pod, FOUR)
    want["1"] = (good, bad)
    # 2. the pod holds 10.173.13.2: filter gets the node that routes it
    assert await bind(galaxy, pod, "node4") == ["10.173.13.2"]
    got["2"] = await outcome(galaxy, pod, FOUR)
    want["2"] = (["node4"], ["node1", "node2", "node3"])
    # 3. the pod is deleted, the pool keeps the address; dp2's pod is pinned to it and gets it
    await delete_pod(galaxy, fake_apiserver, pod)
    got["3-kept"] = await state(galaxy, "10.173.13.2")
    want["3-kept"] = ("kept", "pool/pool1")
    pod2 = dp2.pod("abcde")
    got["3"] = await outcome(galaxy, pod2, FOUR)
    want["3"] = (["node4"], ["node1", "node2", "node3"])
    assert await bind(galaxy, pod2, "node4") == ["10.173.13.2"]
    # 4. nothing kept any more: dp's next pod passes every good node again
    got["4"] = await outcome(galaxy, dp.pod("zzzzz"), FOUR)
    want["4"] = (good, bad)
    assert got == want


# -- release policies (deployment_test.go, statefulset_test.go, floatingip_plugin_test.go) ------
async def test_galaxy_TestDpReleasePolicy(
        galaxy: RunningService, fake_apiserver: FakeApiServer) -> None:
    """A Deployment pod bound, then deleted: freed, or kept for the Deployment or
    the pool, by policy and replicas (and TestParseReleasePolicy: an empty pool name is no
    pool)."""
    cases: list[tuple[str, dict[str, str], int, str | None]] = [
        ("nil-1", {}, 1, None),
        ("imm-1", {POLICY: "immutable"}, 1, "deploy/default/imm-1"),
        ("imm-0", {POLICY: "immutable"}, 0, None),
        ("never-0", {POLICY: "never"}, 0, "deploy/default/never-0"),
        ("never-1", {POLICY: "never"}, 1, "deploy/default/never-1"),
        ("pool-0", {POOL: "test-a"}, 0, "pool/test-a"),
        ("pool-1", {POOL: "test-b"}, 1, "pool/test-b"),
        ("nopool-1", {POOL: ""}, 1, None),
    ]
    got, want = {}, {}
    for name, marks, replicas, owner in cases:
        pod = Deployment(fake_apiserver, name, replicas, marks).pod("xxxyy")
        (address,) = await bind(galaxy, pod, ROOMY[0])
        await delete_pod(galaxy, fake_apiserver, pod)
        got[name] = await state(galaxy, address)
        want[name] = None if owner is None else ("kept", owner)
    assert got == want


async def test_galaxy_TestStsReleasePolicy(
        galaxy: RunningService, fake_apiserver: FakeApiServer) -> None:
    """A StatefulSet pod ``<name>-0`` bound, then deleted: kept for its ordinal or
    freed, by policy and replicas."""
    cases: list[tuple[str, str | None, int, bool]] = [
        ("nil-1", None, 1, False), ("imm-1", "immutable", 1, True),
        ("imm-0", "immutable", 0, False), ("never-0", "never", 0, True),
        ("never-1", "never", 1, True),
    ]
    got, want = {}, {}
    for name, policy, replicas, keep in cases:
        pod = sts_pod(fake_apiserver, statefulset(fake_apiserver, name, replicas), 0,
                      policy=policy)
        (address,) = await bind(galaxy, pod, ROOMY[0])
        await delete_pod(galaxy, fake_apiserver, pod)
        got[name] = await state(galaxy, address)
        want[name] = ("kept", f"sts/default/{name}/0") if keep else None
    assert got == want


# -- bind and unbind (bind_test.go) -------------------------------------------------------------
async def test_galaxy_TestBindUnBindRequestIPRange(
        galaxy: RunningService, fake_apiserver: FakeApiServer) -> None:
    """Two groups bind exactly the two requested addresses, the Binding's annotation carries
    both (and the request), and the pod's deletion frees both."""
    request = {"request_ip_range": [["10.49.27.205"], ["10.49.27.217"]]}
    sts = statefulset(fake_apiserver, "pod1", namespace="ns1")
    pod = sts_pod(fake_apiserver, sts, 0, args=request, eni_ips=2)
    assert await bind(galaxy, pod, "node3") == ["10.49.27.205", "10.49.27.217"]
    bound = fake_apiserver.get("pods", "pod1-0", namespace="ns1")
    assert bound is not None and bound["spec"]["nodeName"] == "node3"
    args = json.loads(bound["metadata"]["annotations"][ARGS])
    assert args == {**request, "common": {"ipinfos": [
        {"ip": "10.49.27.205/24", "vlan": 2, "gateway": "10.49.27.1"},
        {"ip": "10.49.27.217/24", "vlan": 2, "gateway": "10.49.27.1"}]}}
    await delete_pod(galaxy, fake_apiserver, pod)
    assert await rows(galaxy) == {}


async def test_galaxy_TestFilterBindRequestIPRange(
        galaxy: RunningService, fake_apiserver: FakeApiServer) -> None:
    """A pod that holds the address of its first group and now asks for a second group too
    keeps the first and gets the second (galaxy re-binds the same pod; here the StatefulSet
    pod comes back with the longer request, as after a template change)."""
    sts = statefulset(fake_apiserver, "pod1", namespace="ns1")
    first = sts_pod(fake_apiserver, sts, 0, policy="immutable",
                    args={"request_ip_range": [["10.49.27.205"]]})
    assert await bind(galaxy, first, "node3") == ["10.49.27.205"]
    await delete_pod(galaxy, fake_apiserver, first)
    assert await state(galaxy, "10.49.27.205") == ("kept", "sts/ns1/pod1/0")
    again = sts_pod(fake_apiserver, sts, 0, policy="immutable", eni_ips=2,
                    args={"request_ip_range": [["10.49.27.205"], ["10.49.27.218"]]})
    assert await bind(galaxy, again, "node3") == ["10.49.27.205", "10.49.27.218"]
    assert {a: v[:2] for a, v in (await rows(galaxy)).items()} == {
        "10.49.27.205": ("allocated", "sts/ns1/pod1/0"),
        "10.49.27.218": ("allocated", "sts/ns1/pod1/0")}


@pytest.mark.parametrize("garbage", ["fff", '{"common": "fff"}', '{"common": {"ipinfos": 7}}',
                                     '{"common": {"ipinfos": ["x", {"ip": 5}]}}'])
async def test_galaxy_TestUnBind(galaxy: RunningService, fake_apiserver: FakeApiServer,
                                 garbage: str) -> None:
    """The database, not the pod's annotation, says what a pod holds: a bound pod whose args
    annotation was overwritten with garbage does not upset a reconciler pass and its
    deletion still frees its address."""
    pod = fake_apiserver.create("pods", make_pod("pod1-1", "demo"))
    (address,) = await bind(galaxy, pod, "node3")
    fake_apiserver.set_pod_status("demo", "pod1-1", phase="Running")
    fake_apiserver.patch("pods", "pod1-1", {"metadata": {"annotations": {ARGS: garbage}}},
                         namespace="demo")
    report = await galaxy.runtime.reconciler.run_pass(apply=True)
    assert report.error is None, report.error
    assert await state(galaxy, address) == ("allocated", "pod/demo/pod1-1")
    await delete_pod(galaxy, fake_apiserver, pod)
    assert await rows(galaxy) == {}


# -- resync (resync_test.go) --------------------------------------------------------------------
async def test_galaxy_TestResyncStsPod(
        service_factory: ServiceFactory, fake_apiserver: FakeApiServer, tmp_path: Path) -> None:
    """galaxy's ten resync cases for StatefulSet pods, plus TestResyncAppNotExist and
    TestResyncPodUidChanged: the pods change while the service is down, and the pass the
    new leader runs at election frees or keeps each address as galaxy's resyncPod does."""
    pools = galaxy_cluster(fake_apiserver, tmp_path)
    # case: (policy, what happens while the service is down, expected owner or None = freed)
    cases: dict[str, tuple[str | None, str, str | None]] = {
        "s1": (None, "pod stays", "pod/default/s1-0"),
        "s2": (None, "pod and app gone", None),
        "s3": ("immutable", "pod and app gone", None),
        "s4": ("immutable", "pod gone", "sts/default/s4/0"),
        "s5": ("immutable", "pod gone, scaled to 0", None),
        "s6": ("never", "pod gone, scaled to 0", "sts/default/s6/0"),
        "s7": ("never", "pod gone", "sts/default/s7/0"),
        "s8": ("never", "pod and app gone", "sts/default/s8/0"),
        "s9": (None, "Failed", None),
        "s10": (None, "Succeeded", None),
    }
    at: dict[str, str] = {}
    async with service_factory(pools_file=pools) as svc:
        await wait_until(lambda: svc.runtime.leadership.is_leader
                         and svc.runtime.nodes.known(ROOMY[0]))
        for name, (policy, _, _) in cases.items():
            pod = sts_pod(fake_apiserver, statefulset(fake_apiserver, name), 0, policy=policy)
            at[name] = await schedule(svc, pod, ROOMY[0])
        pool_dp = Deployment(fake_apiserver, "dp", 1, {POOL: "pool1"}, namespace="ns1")
        at["dp"] = await schedule(svc, pool_dp.pod("yyyyy"), ROOMY[0])
        imm_dp = Deployment(fake_apiserver, "dp2", 1, {POLICY: "immutable"}, namespace="ns2")
        at["dp2"] = await schedule(svc, imm_dp.pod("bbbbb"), ROOMY[0])
        uid_sts = statefulset(fake_apiserver, "uid")
        old = sts_pod(fake_apiserver, uid_sts, 0, policy="immutable")
        at["uid"] = await schedule(svc, old, ROOMY[0])
    # The service is down; the cluster moves on.
    for name, (_, change, _) in cases.items():
        if change in ("Failed", "Succeeded"):
            fake_apiserver.set_pod_status("default", f"{name}-0", phase=change)
        if "gone" in change:
            fake_apiserver.delete("pods", f"{name}-0", namespace="default")
        if "app gone" in change:
            fake_apiserver.delete("statefulsets", name, namespace="default")
        if "scaled to 0" in change:
            fake_apiserver.patch("statefulsets", name, {"spec": {"replicas": 0}},
                                 namespace="default")
    for dep in (pool_dp, imm_dp):  # TestResyncAppNotExist: the pods and their apps are gone
        fake_apiserver.delete("pods", f"{dep.name}-{HASH}-{'yyyyy' if dep is pool_dp else 'bbbbb'}",
                              namespace=dep.namespace)
        fake_apiserver.delete("deployments", dep.name, namespace=dep.namespace)
    # TestResyncPodUidChanged: the pod is re-created under its name with a new UID.
    fake_apiserver.delete("pods", "uid-0", namespace="default")
    new = sts_pod(fake_apiserver, uid_sts, 0, policy="immutable")
    async with service_factory(pools_file=pools) as svc:
        await wait_until(lambda: svc.runtime.reconciler.runs >= 1)
        assert svc.runtime.reconciler.last_report.error is None
        got = {name: await state(svc, address) for name, address in at.items()}
        want: dict[str, tuple[str, str | None] | None] = {
            name: None if owner is None else
            ("allocated" if change == "pod stays" else "kept", owner)
            for name, (_, change, owner) in cases.items()}
        want |= {"dp": ("kept", "pool/pool1"), "dp2": None, "uid": ("kept", "sts/default/uid/0")}
        assert got == want
        # The re-created pod gets its ordinal's address.
        assert await schedule(svc, new, ROOMY[0]) == at["uid"]


async def test_galaxy_TestResyncStsPod_kept_ordinal(
        galaxy: RunningService, fake_apiserver: FakeApiServer) -> None:
    """The same resync cases in galaxy's own data state: the address is already kept for
    the ordinal (galaxy: key kept, pod UID and node cleared) when the StatefulSet is scaled
    down or deleted; a reconciler pass decides as galaxy's resyncPod
    (``unbindNoneDpPod``: immutable frees past ``replicas`` and when the app is gone, never
    keeps)."""
    cases: dict[str, tuple[str, str, str | None]] = {
        "k3": ("immutable", "app gone", None),
        "k4": ("immutable", "app stays", "sts/default/k4/0"),
        "k5": ("immutable", "scaled to 0", None),
        "k6": ("never", "scaled to 0", "sts/default/k6/0"),
        "k7": ("never", "app stays", "sts/default/k7/0"),
        "k8": ("never", "app gone", "sts/default/k8/0"),
    }
    at = {}
    for name, (policy, _, _) in cases.items():
        pod = sts_pod(fake_apiserver, statefulset(fake_apiserver, name), 0, policy=policy)
        (at[name],) = await bind(galaxy, pod, ROOMY[0])
        await delete_pod(galaxy, fake_apiserver, pod)
        assert await state(galaxy, at[name]) == ("kept", f"sts/default/{name}/0")
    for name, (_, change, _) in cases.items():
        if change == "app gone":
            fake_apiserver.delete("statefulsets", name, namespace="default")
        elif change == "scaled to 0":
            fake_apiserver.patch("statefulsets", name, {"spec": {"replicas": 0}},
                                 namespace="default")
    report = await galaxy.runtime.reconciler.run_pass(apply=True)
    assert report.error is None, report.error
    got = {name: await state(galaxy, address) for name, address in at.items()}
    assert got == {name: None if owner is None else ("kept", owner)
                   for name, (_, _, owner) in cases.items()}
