"""galaxy's operator API (``/v1/ip``, ``/v1/pool``) in galaxy's shapes, minus galaxy's faults."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from ipam.engine.pool_config import parse_pool_config
from ipam.services.allocation import Actor
from tests.api.rest_conftest import (
    ADMIN,
    READ,
    bind,
    rest_fixture,  # noqa: F401
    rest_seed_pod_fixture,  # noqa: F401
)
from tests.service_harness import RunningService
from tests.services.helpers import deployment_pod, make_pod

SEED = "test-busybox-5d8f7c9b6-abcde"
ACTOR = Actor("test")


async def populate(svc: RunningService, seed_pod: dict[str, Any]) -> dict[str, str]:
    """One address of each kind; returns name -> address."""
    await bind(svc, seed_pod)  # deployment test-busybox, live: 10.11.128.1
    rt, pools = svc.runtime, svc.runtime.catalog.pools
    sts = make_pod("db-0", owner=("StatefulSet", "db"), uid="db-0-uid", annotations={
        "k8s.v1.cni.galaxy.io/release-policy": "immutable"})
    await rt.allocator.allocate(sts, pools, node="node-0", actor=ACTOR)  # .2, pod unknown
    web = deployment_pod("web", "aaaaa", uid="web-uid")
    await rt.allocator.allocate(web, pools, node="node-0", actor=ACTOR)  # .3
    await rt.allocator.release_pod("web-uid", keep=True, actor=ACTOR, reason="gone")
    bare = make_pod("solo", namespace="prod", uid="solo-uid")
    await rt.allocator.allocate(bare, pools, node="node-0", actor=ACTOR)  # .4
    pooled = make_pod("worker", uid="worker-uid", annotations={
        "tke.cloud.tencent.com/eni-ip-pool": "gp"})
    await rt.allocator.allocate(pooled, pools, node="node-0", actor=ACTOR)  # .5
    resp = await svc.client.post("/v1/addresses/10.11.128.6/reserve", headers=ADMIN)
    assert resp.status_code == 200
    return {"seed": "10.11.128.1", "sts": "10.11.128.2", "web": "10.11.128.3",
            "solo": "10.11.128.4", "pooled": "10.11.128.5", "reserved": "10.11.128.6"}


async def list_ips(svc: RunningService, **params: Any) -> Any:
    resp = await svc.client.get("/v1/ip", params=params, headers=READ)
    assert resp.status_code == 200, resp.text
    return resp.json()


def ips(body: Any) -> list[str]:
    return [f["ip"] for f in body["content"]]


async def test_list_in_galaxys_shape(rest: RunningService,
                                     rest_seed_pod: dict[str, Any]) -> None:
    await populate(rest, rest_seed_pod)
    body = await list_ips(rest, size=100)
    assert {k: v for k, v in body.items() if k != "content"} == {
        "last": True, "totalElements": 6, "totalPages": 1, "first": True,
        "numberOfElements": 6, "size": 100, "number": 0}
    by_ip = {f["ip"]: f for f in body["content"]}
    seed = by_ip["10.11.128.1"]
    assert {k: seed[k] for k in ("namespace", "appName", "podName", "appType", "policy",
                                 "releasable")} == {
        "namespace": "default", "appName": "test-busybox", "podName": SEED,
        "appType": "deployment", "policy": 2, "releasable": False}
    assert seed["status"] not in ("Deleted", None) and "updateTime" in seed
    assert by_ip["10.11.128.2"] | {"updateTime": None} == {
        "ip": "10.11.128.2", "namespace": "default", "appName": "db", "podName": "db-0",
        "appType": "statefulset", "policy": 1, "updateTime": None, "status": "Deleted",
        "releasable": True}
    web = by_ip["10.11.128.3"]
    assert (web["appName"], web["status"], web["releasable"], "podName" in web) == (
        "web", "Deleted", True, False)
    assert by_ip["10.11.128.5"]["poolName"] == "gp"
    reserved = by_ip["10.11.128.6"]
    assert reserved["releasable"] is False and "namespace" not in reserved


async def test_filters_fix_galaxys_faults(rest: RunningService,
                                          rest_seed_pod: dict[str, Any]) -> None:
    await populate(rest, rest_seed_pod)
    # galaxy: namespace alone built the key prefix "sts_default_" and missed deployments.
    assert ips(await list_ips(rest, namespace="default")) == [
        "10.11.128.1", "10.11.128.2", "10.11.128.3", "10.11.128.5"]
    assert ips(await list_ips(rest, namespace="prod")) == ["10.11.128.4"]
    # galaxy: an empty appType meant statefulset, so appName of a deployment matched nothing.
    assert ips(await list_ips(rest, appName="test-busybox")) == ["10.11.128.1"]
    assert ips(await list_ips(rest, appName="test-busybox", appType="")) == ["10.11.128.1"]
    assert ips(await list_ips(rest, appType="deployment")) == ["10.11.128.1", "10.11.128.3"]
    assert ips(await list_ips(rest, appType="statefulsets")) == ["10.11.128.2"]
    assert ips(await list_ips(rest, isDeployment="false")) == ["10.11.128.2"]
    assert ips(await list_ips(rest, poolName="gp")) == ["10.11.128.5"]
    assert ips(await list_ips(rest, podName="db-0")) == ["10.11.128.2"]
    assert ips(await list_ips(rest, keyword="busy", appType="statefulset")) == ["10.11.128.1"]
    bad = await rest.client.get("/v1/ip", params={"appType": "daemonset"}, headers=READ)
    assert bad.status_code == 400
    assert bad.json()["code"] == 400
    assert bad.json()["message"] == "bad request: invalid appType daemonset"
    assert bad.json()["error"]["code"] == "invalid"


async def test_pages_and_sorts_as_galaxy(rest: RunningService,
                                         rest_seed_pod: dict[str, Any]) -> None:
    await populate(rest, rest_seed_pod)
    page = await list_ips(rest, page="1", size="4", sort="ip desc")
    assert ips(page) == ["10.11.128.2", "10.11.128.1"]
    assert (page["first"], page["last"], page["number"], page["totalPages"]) == (
        False, True, 1, 2)
    default = await list_ips(rest, page="x", size="-3", sort="weird")
    assert default["size"] == 10 and ips(default)[0] == "10.11.128.1"
    beyond = await list_ips(rest, page="7")
    assert beyond["content"] == [] and beyond["numberOfElements"] == 0
    assert ips(await list_ips(rest, sort="namespace desc"))[0] == "10.11.128.4"


async def test_release_reports_what_it_could_not_release(
    rest: RunningService, rest_seed_pod: dict[str, Any]
) -> None:
    at = await populate(rest, rest_seed_pod)
    resp = await rest.client.post("/v1/ip", headers=ADMIN, json={"ips": [
        {"ip": at["web"], "appName": "web", "appType": "deployment", "namespace": "default",
         "policy": 2, "releasable": True},
        {"ip": at["sts"], "appName": "db", "appType": ""},  # galaxy: "unknown app type"
        {"ip": at["seed"]},
        {"ip": at["reserved"]},
        {"ip": "10.11.128.100"},
        {"ip": at["solo"], "namespace": "default"},
    ]})
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["code"] == 202
    assert body["message"] == "Released 2 ips, 4 ips failed, please check the reasons why " \
                              "they failed"
    assert body["unreleased"] == [at["seed"], at["reserved"], "10.11.128.100", at["solo"]]
    reasons = body["reasons"]
    assert "live pod" in reasons[0] and "reserved by an operator" in reasons[1]
    assert reasons[2] == "10.11.128.100 is not allocated"
    assert reasons[3] == "10.11.128.4 belongs to namespace prod, not default"
    async with rest.runtime.db.engine.connect() as conn:
        states = dict((await conn.execute(text(
            "SELECT host(address), state FROM addresses WHERE state <> 'free'"))).all())
    assert at["web"] not in states and at["sts"] not in states
    assert states[at["seed"]] == "allocated" and states[at["reserved"]] == "reserved"
    ok = await rest.client.post("/v1/ip", headers=ADMIN, json={"ips": [{"ip": at["solo"]}]})
    assert (ok.status_code, ok.json()) == (200, {"code": 200, "message": ""})
    for body_in in ({"ips": [{"ip": "10.11.128.999"}]},
                    {"ips": [{"ip": at["seed"], "appType": "cronjob"}]},
                    {"ips": "nope"}):
        bad = await rest.client.post("/v1/ip", headers=ADMIN, json=body_in)
        assert bad.status_code == 400, bad.text
        assert bad.json()["code"] == 400 and bad.json()["message"].startswith("bad request: ")


async def test_named_pools(rest: RunningService, rest_seed_pod: dict[str, Any]) -> None:
    await populate(rest, rest_seed_pod)
    used = await rest.client.get("/v1/pool/gp", headers=READ)
    assert used.json() == {"code": 200, "message": "",
                           "pool": {"name": "gp", "size": 1, "preAllocateIP": False}}
    created = await rest.client.post("/v1/pool", json={"name": "gp2", "size": 3},
                                     headers=ADMIN)
    assert (created.status_code, created.json()) == (200, {"code": 200, "message": ""})
    got = await rest.client.get("/v1/pool/gp2", headers=READ)
    assert got.json()["pool"] == {"name": "gp2", "size": 3, "preAllocateIP": False}
    filled = await rest.client.post("/v1/pool", headers=ADMIN,
                                    json={"name": "gp2", "size": 3, "preAllocateIP": True})
    assert filled.json() == {"code": 200, "message": "", "realPoolSize": 3}
    kept = ips(await list_ips(rest, poolName="gp2"))
    assert kept == ["10.11.128.7", "10.11.128.8", "10.11.128.9"]
    again = await rest.client.post("/v1/pool", headers=ADMIN,
                                   json={"name": "gp2", "size": 3, "preAllocateIP": True})
    assert again.json()["realPoolSize"] == 3  # idempotent: nothing more taken
    deleted = await rest.client.delete("/v1/pool/gp2", headers=ADMIN)
    assert (deleted.status_code, deleted.json()) == (200, {"code": 200, "message": ""})
    assert await list_ips(rest, poolName="gp2") == {**await list_ips(rest, poolName="gp2"),
                                                   "content": [], "totalElements": 0}
    gone = await rest.client.get("/v1/pool/gp2", headers=READ)
    assert gone.status_code == 404
    assert gone.json()["code"] == 404 and gone.json()["message"] == "not found: pool gp2"
    assert (await rest.client.delete("/v1/pool/gp2", headers=ADMIN)).status_code == 404
    for body in ({"name": ""}, {"name": "x", "size": -1}, {"size": 2}):
        bad = await rest.client.post("/v1/pool", json=body, headers=ADMIN)
        assert bad.status_code == 400, bad.text


async def test_pre_allocation_short_of_addresses_is_202(rest: RunningService) -> None:
    config = [{"routableSubnet": "10.10.100.0/24", "ips": ["10.60.0.1~10.60.0.5"],
               "subnet": "10.60.0.0/24", "gateway": "10.60.0.254"}]
    await rest.runtime.pools.apply(parse_pool_config(config), actor=ACTOR)
    resp = await rest.client.post("/v1/pool", headers=ADMIN,
                                  json={"name": "big", "size": 8, "preAllocateIP": True})
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"code": 202, "message": "No enough IPs", "realPoolSize": 5}
