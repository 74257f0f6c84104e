"""galaxy's scheduling semantics, black-box through the extender, against the fake API server
and real PostgreSQL: request_ip_range in filter, Deployment reuse (also while the old pod is
still Terminating), surge, scale to 0, terminal pods, prioritize by free addresses."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import SEED_NODES, service_settings
from tests.api.test_extender import bind_body, filter_body, post
from tests.fakeapi.objects import make_node, make_pod
from tests.fakeapi.server import FakeApiServer
from tests.k8s.conftest import ServiceFactory
from tests.k8s.test_controllers import Workloads, rows, schedule
from tests.service_harness import RunningService, running_service, wait_until

ARGS = "k8s.v1.cni.galaxy.io/args"
#: Two pools: A routes from 10.10.100.0/24 (node-0, node-1), B from 10.20.0.0/24 (node-x).
TWO_POOLS = [
    {"routableSubnet": "10.10.100.0/24", "ips": ["10.11.128.1~10.11.128.10"],
     "subnet": "10.11.128.0/24", "gateway": "10.11.128.254", "vlan": 1200},
    {"routableSubnet": "10.20.0.0/24", "ips": ["10.12.0.1~10.12.0.2"],
     "subnet": "10.12.0.0/24", "gateway": "10.12.0.254"},
]
ALL_NODES = ["node-0", "node-1", "node-x"]


@pytest.fixture
def two_pools(tmp_path: Path) -> Path:
    path = tmp_path / "pools.json"
    path.write_text(json.dumps(TWO_POOLS))
    return path


@pytest.fixture
async def svc(service_factory: ServiceFactory, two_pools: Path
              ) -> AsyncIterator[RunningService]:
    async with service_factory(pools_file=two_pools) as running:
        await wait_until(lambda: running.runtime.leadership.is_leader)
        yield running


def events_on(fake: FakeApiServer, pod: str) -> dict[str, dict[str, Any]]:
    """reason -> the Event ipam recorded on this pod (the latest of each reason)."""
    return {e["reason"]: e for e in fake.list("events", namespace="default")
            if e["involvedObject"]["name"] == pod and e["source"]["component"] == "ipam"}


def reasons_on(fake: FakeApiServer, pod: str) -> set[str]:
    return set(events_on(fake, pod))


def released(svc: RunningService, n: int) -> Any:
    return lambda: svc.runtime.pod_watcher.released >= n


async def filter_names(svc: RunningService, pod: dict[str, Any], names: list[str] | None = None
                       ) -> dict[str, Any]:
    reply: dict[str, Any] = (await post(svc, "filter", filter_body(pod, names or ALL_NODES))
                             ).json()
    return reply


# -- 1. request_ip_range in filter (galaxy TestFilterRequestIPRange) -----------------------
def ranged(name: str, *groups: list[str]) -> dict[str, Any]:
    return make_pod(name, annotations={ARGS: json.dumps({"request_ip_range": list(groups)})})


async def test_request_ip_range_passes_only_nodes_that_route_it(
        svc: RunningService, fake_apiserver: FakeApiServer) -> None:
    pod = fake_apiserver.create("pods", ranged("want-b", ["10.12.0.2"]))
    reply = await filter_names(svc, pod)
    assert reply["NodeNames"] == ["node-x"]
    assert set(reply["FailedNodes"]) == {"node-0", "node-1"}
    assert "request_ip_range[0]" in reply["FailedNodes"]["node-0"]
    assert (await post(svc, "bind", bind_body(pod, "node-x"))).json() == {"Error": ""}
    bound = fake_apiserver.get("pods", "want-b", namespace="default")
    assert bound is not None
    args = json.loads(bound["metadata"]["annotations"][ARGS])
    assert args["request_ip_range"] == [["10.12.0.2"]]  # the request is kept
    assert args["common"]["ipinfos"][0]["ip"].startswith("10.12.0.2/")


async def test_request_ip_range_taken_keeps_the_pod_pending_with_a_reason(
        svc: RunningService, fake_apiserver: FakeApiServer) -> None:
    first = fake_apiserver.create("pods", ranged("first", ["10.11.128.5"]))
    assert (await filter_names(svc, first))["NodeNames"] == ["node-0", "node-1"]
    assert (await post(svc, "bind", bind_body(first, "node-0"))).json() == {"Error": ""}
    second = fake_apiserver.create("pods", ranged("second", ["10.11.128.5"]))
    reply = await filter_names(svc, second)
    assert reply["NodeNames"] == []
    assert all("request_ip_range[0] (10.11.128.5" in r for r in reply["FailedNodes"].values())
    # A range with one address left still passes, and bind takes exactly that one.
    third = fake_apiserver.create("pods", ranged("third", ["10.11.128.5~10.11.128.6"]))
    assert (await filter_names(svc, third))["NodeNames"] == ["node-0", "node-1"]
    assert (await post(svc, "bind", bind_body(third, "node-1"))).json() == {"Error": ""}
    assert "10.11.128.6" in await rows(svc)


async def test_request_ip_range_is_all_or_nothing_across_groups(
        svc: RunningService, fake_apiserver: FakeApiServer) -> None:
    pod = fake_apiserver.create("pods", make_pod(
        "two", eni_ips=2, annotations={ARGS: json.dumps(
            {"request_ip_range": [["10.11.128.1~10.11.128.10"], ["10.12.0.1~10.12.0.2"]]})}))
    reply = await filter_names(svc, pod)
    assert reply["NodeNames"] == []  # no node routes both pools
    assert "request_ip_range[1]" in reply["FailedNodes"]["node-0"]
    assert "request_ip_range[0]" in reply["FailedNodes"]["node-x"]
    assert await rows(svc) == {}


# -- 2. Deployment reuse (galaxy TestFilterForDeployment) -----------------------------------
async def test_replacement_waits_for_the_terminating_pod_and_gets_its_address(
        svc: RunningService, fake_apiserver: FakeApiServer) -> None:
    fake_apiserver.settings.graceful_pod_deletion = True
    w = Workloads(fake_apiserver)
    d = w.deployment("web", 2, "never")
    a = w.deployment_pod(d, "aaaaa")
    first = await schedule(svc, a)
    await schedule(svc, w.deployment_pod(d, "bbbbb"))
    fake_apiserver.set_pod_status("default", "web-5d8f7c9b6-aaaaa", phase="Running")
    fake_apiserver.delete("pods", "web-5d8f7c9b6-aaaaa", namespace="default",
                          grace_period_seconds=30)
    old = fake_apiserver.get("pods", "web-5d8f7c9b6-aaaaa", namespace="default")
    assert old is not None and old["metadata"].get("deletionTimestamp")
    # The ReplicaSet's replacement arrives while the old pod is Terminating.
    c = w.deployment_pod(d, "ccccc")
    reply = await filter_names(svc, c, ["node-0", "node-1"])
    assert reply["NodeNames"] == []
    reason = reply["FailedNodes"]["node-0"]
    assert "waiting for terminating pod default/web-5d8f7c9b6-aaaaa" in reason, reason
    assert first in reason
    assert len(await rows(svc)) == 2  # nothing fresh was promised or taken
    # The kubelet finishes the deletion; the scheduler's retry gets the same address.
    fake_apiserver.finalize_pod("default", "web-5d8f7c9b6-aaaaa")
    await wait_until(released(svc, 1))
    assert await schedule(svc, c, "node-1") == first
    assert len(await rows(svc)) == 2
    # kubectl describe tells the story: held back, then the address, on the new pod; kept
    # on the old one.
    await wait_until(lambda: {"IPAMHeldBack", "AddressAssigned"} <= reasons_on(
        fake_apiserver, "web-5d8f7c9b6-ccccc"))
    held_back = events_on(fake_apiserver, "web-5d8f7c9b6-ccccc")["IPAMHeldBack"]
    assert held_back["type"] == "Warning" and "waiting for terminating pod" in held_back["message"]
    assert first in events_on(fake_apiserver, "web-5d8f7c9b6-ccccc")["AddressAssigned"]["message"]
    await wait_until(lambda: "AddressKept" in reasons_on(fake_apiserver, "web-5d8f7c9b6-aaaaa"))


async def test_forced_delete_replacement_gets_the_address_even_before_the_watcher(
        db_url: str, two_pools: Path, fake_apiserver: FakeApiServer, tmp_path: Path) -> None:
    """No pod watcher at all: filter itself releases the gone predecessor under its policy."""
    for name, ip in SEED_NODES.items():
        fake_apiserver.create("nodes", make_node(name, internal_ip=ip))
    settings = service_settings(db_url, fake_apiserver, tmp_path, pools_file=two_pools,
                                controllers_enabled=False)
    nodes = {"items": [fake_apiserver.get("nodes", "node-0")]}

    async def place(pod: dict[str, Any]) -> str:
        """Full-node mode: without controllers there is no node watcher either."""
        body = {"Pod": pod, "Nodes": nodes, "NodeNames": None}
        reply = (await post(svc, "filter", body)).json()
        assert [n["metadata"]["name"] for n in reply["Nodes"]["items"]] == ["node-0"], reply
        assert (await post(svc, "bind", bind_body(pod, "node-0"))).json() == {"Error": ""}
        return str((await svc.runtime.allocator.pod_addresses(pod["metadata"]["uid"]))[0].address)

    async with running_service(settings) as svc:
        w = Workloads(fake_apiserver)
        d = w.deployment("api", 2, "immutable")
        first = await place(w.deployment_pod(d, "aaaaa"))
        await place(w.deployment_pod(d, "bbbbb"))
        fake_apiserver.delete("pods", "api-5d8f7c9b6-aaaaa", namespace="default",
                              grace_period_seconds=0)
        assert await place(w.deployment_pod(d, "ccccc")) == first
        assert len(await rows(svc)) == 2


async def test_kept_address_pins_the_replacement_to_nodes_that_route_it(
        svc: RunningService, fake_apiserver: FakeApiServer) -> None:
    w = Workloads(fake_apiserver)
    d = w.deployment("pin", 1, "immutable")
    first = await schedule(svc, w.deployment_pod(d, "aaaaa"))
    fake_apiserver.delete("pods", "pin-5d8f7c9b6-aaaaa", namespace="default")
    await wait_until(released(svc, 1))
    assert (await rows(svc))[first][0] == "kept"
    reply = await filter_names(svc, w.deployment_pod(d, "bbbbb"))
    assert reply["NodeNames"] == ["node-0", "node-1"]
    assert "not routable from node" in reply["FailedNodes"]["node-x"]


async def test_surge_pod_gets_a_temporary_address_and_the_set_shrinks_back(
        svc: RunningService, fake_apiserver: FakeApiServer) -> None:
    w = Workloads(fake_apiserver)
    d = w.deployment("roll", 2, "never")
    old = [await schedule(svc, w.deployment_pod(d, s)) for s in ("aaaaa", "bbbbb")]
    surge = await schedule(svc, w.deployment_pod(d, "ccccc"))  # old pods alive: no deadlock
    assert surge not in old and len(await rows(svc)) == 3
    fake_apiserver.delete("pods", "roll-5d8f7c9b6-aaaaa", namespace="default")
    await wait_until(released(svc, 1))
    assert set(await rows(svc)) == {old[1], surge}


async def test_never_deployment_scaled_to_zero_keeps_its_addresses(
        svc: RunningService, fake_apiserver: FakeApiServer) -> None:
    w = Workloads(fake_apiserver)
    d = w.deployment("zero", 2, "never")
    addresses = {await schedule(svc, w.deployment_pod(d, s)) for s in ("aaaaa", "bbbbb")}
    fake_apiserver.patch("deployments", "zero", {"spec": {"replicas": 0}}, namespace="default")
    for s in ("aaaaa", "bbbbb"):
        fake_apiserver.delete("pods", f"zero-5d8f7c9b6-{s}", namespace="default")
    await wait_until(released(svc, 2))
    assert {a: v[:2] for a, v in (await rows(svc)).items()} == dict.fromkeys(
        addresses, ("kept", "deploy/default/zero"))
    fake_apiserver.patch("deployments", "zero", {"spec": {"replicas": 2}}, namespace="default")
    again = {await schedule(svc, w.deployment_pod(d, s)) for s in ("ccccc", "ddddd")}
    assert again == addresses


# -- 4. Terminal pods (galaxy TestReleaseIPOfFinishedPod) -----------------------------------
async def test_failed_and_succeeded_pods_release_by_policy(
        svc: RunningService, fake_apiserver: FakeApiServer) -> None:
    plain = fake_apiserver.create("pods", make_pod("job-1"))
    freed = await schedule(svc, plain)
    w = Workloads(fake_apiserver)
    d = w.deployment("keep", 1, "immutable")
    kept = await schedule(svc, w.deployment_pod(d, "aaaaa"))
    fake_apiserver.set_pod_status("default", "job-1", phase="Succeeded")
    fake_apiserver.set_pod_status("default", "keep-5d8f7c9b6-aaaaa", phase="Failed")
    await wait_until(released(svc, 2))
    assert {a: v[:2] for a, v in (await rows(svc)).items()} == {
        kept: ("kept", "deploy/default/keep")}
    assert freed not in await rows(svc)
    # The evicted pod's replacement gets the address while the Failed pod object remains.
    assert await schedule(svc, w.deployment_pod(d, "bbbbb")) == kept


async def test_pod_that_failed_while_the_service_was_down_is_released_by_the_reconciler(
        service_factory: ServiceFactory, two_pools: Path,
        fake_apiserver: FakeApiServer) -> None:
    async with service_factory(pools_file=two_pools) as svc:
        await wait_until(lambda: svc.runtime.leadership.is_leader)
        address = await schedule(svc, fake_apiserver.create("pods", make_pod("batch")))
    fake_apiserver.set_pod_status("default", "batch", phase="Failed")
    async with service_factory(pools_file=two_pools) as svc:
        await wait_until(lambda: svc.runtime.leadership.is_leader)
        # The election-time reconciler pass finds it: the pod is there, but Failed.
        for _ in range(500):
            if address not in await rows(svc):
                break
            await asyncio.sleep(0.02)
        assert address not in await rows(svc)


# -- 8. prioritize by the number of free addresses ------------------------------------------
async def test_prioritize_prefers_more_free_addresses_then_the_kept_subnet(
        svc: RunningService, fake_apiserver: FakeApiServer) -> None:
    # Pool A: 10 addresses, 4 taken -> 6 free (60%); pool B: 2 of 2 free (100%).
    for i in range(4):
        await schedule(svc, fake_apiserver.create("pods", make_pod(f"fill-{i}")))
    catalog = svc.runtime.catalog
    pool_a = catalog.pools_for(ipaddress.ip_address("10.10.100.10"))[0]
    await wait_until(lambda: catalog.free(pool_a) == 6)
    nodes = {"items": [fake_apiserver.get("nodes", n) for n in ("node-0", "node-x")]}
    pod = fake_apiserver.create("pods", make_pod("prio"))
    body = {"Pod": pod, "Nodes": nodes, "NodeNames": None}
    scores = {e["Host"]: e["Score"] for e in (await post(svc, "prioritize", body)).json()}
    assert scores["node-0"] > scores["node-x"] > 0, scores
    # A Deployment's kept address ranks its subnet first, whatever is free elsewhere.
    w = Workloads(fake_apiserver)
    d = w.deployment("prio", 1, "never")
    kept = await schedule(svc, w.deployment_pod(d, "aaaaa"), "node-x")
    fake_apiserver.delete("pods", "prio-5d8f7c9b6-aaaaa", namespace="default")
    await wait_until(released(svc, 1))
    assert (await rows(svc))[kept][0] == "kept"
    replacement = w.deployment_pod(d, "bbbbb")
    body = {"Pod": replacement, "Nodes": nodes, "NodeNames": None}
    scores = {e["Host"]: e["Score"] for e in (await post(svc, "prioritize", body)).json()}
    assert scores["node-x"] > scores["node-0"], scores


async def test_recreated_statefulset_ordinal_binds_at_once_before_the_watcher(
        db_url: str, two_pools: Path, fake_apiserver: FakeApiServer, tmp_path: Path) -> None:
    """Same name, new UID: the API server proves the old pod gone, so its address is handed
    over on the first bind instead of a Conflict that parks the pod for a minute."""
    for name, ip in SEED_NODES.items():
        fake_apiserver.create("nodes", make_node(name, internal_ip=ip))
    settings = service_settings(db_url, fake_apiserver, tmp_path, pools_file=two_pools,
                                controllers_enabled=False)
    nodes = {"items": [fake_apiserver.get("nodes", "node-0")]}
    async with running_service(settings) as svc:
        w = Workloads(fake_apiserver)
        s = w.statefulset("db", 2, "immutable")
        addresses = []
        for ordinal in (0, 1, 1):
            if ordinal == 1 and addresses[1:]:
                fake_apiserver.delete("pods", "db-1", namespace="default",
                                      grace_period_seconds=0)
            pod = w.sts_pod(s, ordinal)
            reply = (await post(svc, "filter", {"Pod": pod, "Nodes": nodes,
                                                "NodeNames": None})).json()
            assert [n["metadata"]["name"] for n in reply["Nodes"]["items"]] == ["node-0"]
            assert (await post(svc, "bind", bind_body(pod, "node-0"))).json() == {"Error": ""}
            held = await svc.runtime.allocator.pod_addresses(pod["metadata"]["uid"])
            addresses.append(str(held[0].address))
        assert addresses[2] == addresses[1] and len(await rows(svc)) == 2
