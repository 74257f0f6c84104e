"""The extender over real HTTP with wire-exact kube-scheduler bodies, real PostgreSQL and the
fake API server the official client talks to."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import orjson
from sqlalchemy import text

from tests.conftest import FIXTURES
from tests.fakeapi.objects import make_pod
from tests.fakeapi.server import FakeApiServer
from tests.service_harness import RunningService

ARGS = "k8s.v1.cni.galaxy.io/args"


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


async def post(svc: RunningService, verb: str, body: bytes | dict[str, Any]) -> Any:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return await svc.client.post(f"/v1/{verb}", content=content,
                                 headers={"Content-Type": "application/json"})


async def taken(svc: RunningService) -> list[tuple[str, str, str]]:
    async with svc.runtime.db.engine.connect() as conn:
        rows = await conn.execute(text(
            "SELECT host(address), state, coalesce(pod_uid, '') FROM addresses "
            "WHERE state <> 'free' ORDER BY address"))
        return [tuple(r) for r in rows]  # type: ignore[misc]


def filter_body(pod: dict[str, Any], names: list[str]) -> dict[str, Any]:
    return {"Pod": pod, "Nodes": None, "NodeNames": names}


def bind_body(pod: dict[str, Any], node: str) -> dict[str, Any]:
    meta = pod["metadata"]
    return {"PodName": meta["name"], "PodNamespace": meta.get("namespace", "default"),
            "PodUID": meta["uid"], "Node": node}


async def test_filter_nodecache_matches_the_fixture_reply(service: RunningService,
                                                          seed_pod: dict[str, Any]) -> None:
    resp = await post(service, "filter", raw("extender/filter-request-nodecache.json"))
    assert resp.status_code == 200
    assert resp.json() == json.loads(raw("extender/filter-reply-nodecache.json"))
    assert await taken(service) == []  # filter reserves nothing in the database


async def test_filter_full_nodes_returns_the_same_node_objects(service: RunningService) -> None:
    request = json.loads(raw("extender/filter-request-fullnodes.json"))
    resp = await post(service, "filter", raw("extender/filter-request-fullnodes.json"))
    body = resp.json()
    assert resp.status_code == 200 and body["Error"] == "" and body["NodeNames"] is None
    sent = {n["metadata"]["name"]: n for n in request["Nodes"]["items"]}
    assert [n["metadata"]["name"] for n in body["Nodes"]["items"]] == ["node-0", "node-1"]
    assert body["Nodes"]["items"] == [sent["node-0"], sent["node-1"]]
    assert list(body["FailedNodes"]) == ["node-x"]


async def test_pod_without_the_resource_passes_untouched(
    service: RunningService, fake_apiserver: FakeApiServer
) -> None:
    pod = fake_apiserver.create("pods", make_pod("plain", eni_ips=None))
    resp = await post(service, "filter", filter_body(pod, ["node-0", "node-x"]))
    assert resp.json()["NodeNames"] == ["node-0", "node-x"]
    assert resp.json()["FailedNodes"] == {}


async def test_unknown_node_fails_with_a_reason_and_is_never_returned(
    service: RunningService, seed_pod: dict[str, Any]
) -> None:
    resp = await post(service, "filter", filter_body(seed_pod, ["node-0", "ghost"]))
    body = resp.json()
    assert body["NodeNames"] == ["node-0"]
    assert "not known to ipam" in body["FailedNodes"]["ghost"]


async def test_bind_creates_binding_with_galaxy_annotation(
    service: RunningService, fake_apiserver: FakeApiServer, seed_pod: dict[str, Any]
) -> None:
    await post(service, "filter", raw("extender/filter-request-nodecache.json"))
    resp = await post(service, "bind", raw("extender/bind-request.json"))
    assert resp.status_code == 200
    assert resp.json() == json.loads(raw("extender/bind-reply.json"))
    pod = fake_apiserver.get("pods", "test-busybox-5d8f7c9b6-abcde", namespace="default")
    assert pod is not None and pod["spec"]["nodeName"] == "node-0"
    assert json.loads(pod["metadata"]["annotations"][ARGS]) == {"common": {"ipinfos": [
        {"ip": "10.11.128.1/21", "vlan": 1200, "gateway": "10.11.135.254"}]}}
    assert await taken(service) == [("10.11.128.1", "allocated", seed_pod["metadata"]["uid"])]
    assert fake_apiserver.request_count("POST", r"/pods/[^/]+/binding$") == 1


async def test_retried_bind_allocates_nothing_new(
    service: RunningService, seed_pod: dict[str, Any]
) -> None:
    first = await post(service, "bind", raw("extender/bind-request.json"))
    again = await post(service, "bind", raw("extender/bind-request.json"))
    assert first.json() == again.json() == {"Error": ""}
    assert await taken(service) == [("10.11.128.1", "allocated", seed_pod["metadata"]["uid"])]


async def test_bind_of_a_deleted_pod_leaves_nothing_reserved(
    service: RunningService, fake_apiserver: FakeApiServer, seed_pod: dict[str, Any]
) -> None:
    await post(service, "filter", raw("extender/filter-request-nodecache.json"))
    fake_apiserver.delete("pods", seed_pod["metadata"]["name"], namespace="default")
    resp = await post(service, "bind", raw("extender/bind-request.json"))
    assert "not found" in resp.json()["Error"]
    assert await taken(service) == []


async def test_bind_of_a_recreated_pod_is_refused_and_frees_the_address(
    service: RunningService, fake_apiserver: FakeApiServer, seed_pod: dict[str, Any]
) -> None:
    # Filter saw the old pod; before bind, the pod is re-created with a new UID.
    await post(service, "filter", raw("extender/filter-request-nodecache.json"))
    name = seed_pod["metadata"]["name"]
    fake_apiserver.delete("pods", name, namespace="default")
    fresh = copy.deepcopy(seed_pod)
    fresh["metadata"]["uid"] = "11111111-2222-3333-4444-555555555555"
    fresh["metadata"].pop("resourceVersion", None)
    fake_apiserver.create("pods", fresh)
    resp = await post(service, "bind", raw("extender/bind-request.json"))
    assert resp.status_code == 200 and resp.json()["Error"]
    assert await taken(service) == []
    assert fake_apiserver.get("pods", name, namespace="default")["spec"].get("nodeName") is None


async def test_binding_refused_by_api_server_is_undone(
    service: RunningService, fake_apiserver: FakeApiServer, seed_pod: dict[str, Any]
) -> None:
    # Someone else bound the pod to another node first: our Binding gets 409.
    fake_apiserver.bind("default", seed_pod["metadata"]["name"], "node-1")
    resp = await post(service, "bind", raw("extender/bind-request.json"))
    assert "refused" in resp.json()["Error"]
    assert await taken(service) == []


async def test_exhausted_pool_is_200_with_failed_nodes(
    service: RunningService, fake_apiserver: FakeApiServer
) -> None:
    await service.runtime.pools.apply(
        __import__("ipam.engine.pool_config", fromlist=["parse_pool_config"]).parse_pool_config(
            [{"routableSubnet": "10.10.100.0/24", "ips": ["10.11.128.1"],
              "subnet": "10.11.128.0/21", "gateway": "10.11.135.254", "vlan": 1200}]),
        actor=__import__("ipam.services.allocation", fromlist=["Actor"]).Actor("test"))
    await service.runtime.catalog.refresh(service.runtime.db)
    a = fake_apiserver.create("pods", make_pod("a"))
    b = fake_apiserver.create("pods", make_pod("b"))
    first = (await post(service, "filter", filter_body(a, ["node-0", "node-1"]))).json()
    assert first["NodeNames"] == ["node-0", "node-1"]
    # b is filtered while a's bind is still in flight: the one address is promised to a.
    second = (await post(service, "filter", filter_body(b, ["node-0"]))).json()
    assert second["NodeNames"] == [] and second["Error"] == ""
    assert second["FailedNodes"] == {"node-0": "pool 10.11.128.0/21 exhausted"}
    assert (await post(service, "bind", bind_body(a, "node-1"))).json() == {"Error": ""}
    third = (await post(service, "filter", filter_body(b, ["node-0"]))).json()
    assert third["FailedNodes"] == {"node-0": "pool 10.11.128.0/21 exhausted"}
    refused = (await post(service, "bind", bind_body(b, "node-0"))).json()
    assert "exhausted" in refused["Error"]


async def test_prioritize_prefers_the_kept_address(
    service: RunningService, fake_apiserver: FakeApiServer, seed_pod: dict[str, Any]
) -> None:
    await post(service, "bind", raw("extender/bind-request.json"))
    resp = await post(service, "prioritize",
                      filter_body(seed_pod, ["node-0", "node-1", "node-x"]))
    scores = {h["Host"]: h["Score"] for h in resp.json()}
    assert scores == {"node-0": 10, "node-1": 10, "node-x": 0}
    other = fake_apiserver.create("pods", make_pod("other"))
    resp = await post(service, "prioritize", filter_body(other, ["node-0", "node-x"]))
    scores = {h["Host"]: h["Score"] for h in resp.json()}
    assert 0 < scores["node-0"] < 10 and scores["node-x"] == 0


async def test_200_pods_filtered_and_bound_concurrently_get_200_addresses(
    service: RunningService, fake_apiserver: FakeApiServer
) -> None:
    pods = [fake_apiserver.create("pods", make_pod(f"burst-{i}")) for i in range(200)]

    async def schedule(pod: dict[str, Any]) -> str:
        result = (await post(service, "filter", filter_body(pod, ["node-0", "node-1"]))).json()
        node = result["NodeNames"][0]
        reply = (await post(service, "bind", bind_body(pod, node))).json()
        assert reply == {"Error": ""}
        bound = fake_apiserver.get("pods", pod["metadata"]["name"], namespace="default")
        return str(json.loads(bound["metadata"]["annotations"][ARGS])["common"]["ipinfos"][0]["ip"])

    addresses = await asyncio.gather(*(schedule(p) for p in pods))
    assert len(set(addresses)) == 200
    rows = await taken(service)
    assert len(rows) == 200 and len({r[2] for r in rows}) == 200


async def test_failed_binding_gives_a_reused_kept_address_back_to_its_owner(
    service: RunningService, fake_apiserver: FakeApiServer, seed_pod: dict[str, Any]
) -> None:
    # A pod of the same never-policy Deployment held 10.11.128.1 and is gone: it is kept.
    old = copy.deepcopy(seed_pod)
    old["metadata"].update(name="test-busybox-5d8f7c9b6-old00", uid="old-uid")
    old["metadata"].pop("resourceVersion", None)
    old = fake_apiserver.create("pods", old)
    assert (await post(service, "bind", bind_body(old, "node-0"))).json() == {"Error": ""}
    await service.runtime.allocator.release_pod(
        "old-uid", keep=True, actor=__import__("ipam.services.allocation",
                                               fromlist=["Actor"]).Actor("test"), reason="gone")
    # The new pod reuses it, but its Binding is refused: the address goes back to kept.
    fake_apiserver.bind("default", seed_pod["metadata"]["name"], "node-1")
    resp = await post(service, "bind", raw("extender/bind-request.json"))
    assert "refused" in resp.json()["Error"]
    assert await taken(service) == [("10.11.128.1", "kept", "")]
