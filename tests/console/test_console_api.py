"""The console's pages and its read-only endpoints on the real service (uvicorn, PostgreSQL,
the fake API server), without a browser."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from pathlib import Path
from typing import Any

from ipam.api.console import assets
from ipam.services import refusals
from tests.api.rest_conftest import (
    ADMIN,
    CNI,
    READ,
    bind,
    rest_fixture,  # noqa: F401
    rest_seed_pod_fixture,  # noqa: F401
    rest_settings,
    running_rest_service,
)
from tests.fakeapi.objects import make_deployment, make_node, make_pod
from tests.fakeapi.server import FakeApiServer
from tests.service_harness import RunningService, wait_until

POOL = "10.11.128.0/21"
NETWORKS = {"k8s.v1.cni.cncf.io/networks": "galaxy-k8s-vlan"}


async def get(svc: RunningService, path: str, headers: dict[str, str] = READ, **params: Any
              ) -> Any:
    resp = await svc.client.get(path, params=params, headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()


# -- pages ----------------------------------------------------------------------------------
async def test_pages_are_served_without_a_token_under_a_strict_policy(rest: RunningService
                                                                      ) -> None:
    resp = await rest.client.get("/console")
    assert resp.status_code == 308 and resp.headers["location"] == "console/"
    page = await rest.client.get("/console/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    script = await rest.client.get("/console/main.js")
    assert script.headers["content-type"].startswith("text/javascript")
    again = await rest.client.get("/console/main.js",
                                  headers={"If-None-Match": script.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    for missing in ("/console/nope.js", "/console/__init__.py", "/console/%2e%2e/app.py",
                    "/console/..%2fapp.py"):
        resp = await rest.client.get(missing)
        assert resp.status_code == 404, missing
        assert resp.json()["error"]["code"] in ("not_found", "route_not_found"), missing


def test_every_file_the_pages_load_ships_in_the_package() -> None:
    """index.html's links and every module's imports name files ``ipam.console`` serves
    (package-data in pyproject.toml; a file missing there breaks the console after install)."""
    served = assets()
    index = served["index.html"].body.decode()
    wanted = set(re.findall(r'(?:src|href)="(?!#)([^"]+)"', index))
    for name, asset in served.items():
        if name.endswith(".js"):
            wanted |= {m.removeprefix("./") for m in
                       re.findall(r'from "(\./[^"]+)"', asset.body.decode())}
            wanted |= set(re.findall(r'new URL\("([a-z.]+\.json)"', asset.body.decode()))
    assert wanted and wanted <= set(served), wanted - set(served)
    shipped = {p.name for p in (Path(__file__).parents[2] / "ipam" / "console").iterdir()
               if p.suffix in (".html", ".js", ".css", ".json", ".svg")}
    assert shipped == set(served)


async def test_whoami_tells_the_console_the_callers_role(rest: RunningService) -> None:
    assert (await rest.client.get("/v1/whoami")).status_code == 401
    assert await get(rest, "/v1/whoami") == {"name": "viewer", "role": "read",
                                             "authentication": True}
    assert (await get(rest, "/v1/whoami", ADMIN))["role"] == "admin"
    resp = await rest.client.get("/v1/whoami", headers=CNI)
    assert resp.status_code == 403


# -- refusals -------------------------------------------------------------------------------
async def test_refusals_list_held_back_pods_and_those_that_got_an_address_since(
        rest: RunningService, rest_seed_pod: dict[str, Any]) -> None:
    refusals.RECENT.clear()
    stuck = str(uuid.uuid4())
    refusals.record("shop/cart-0", stuck, {"node-0": "pool p exhausted",
                                           "node-1": "pool p exhausted",
                                           "node-x": "node 10.20.0.5 is in no routable subnet"})
    refusals.RECENT.record("shop/old-0", "old-uid", ["pool p exhausted"],
                           now=time.time() - 3600)
    meta = rest_seed_pod["metadata"]
    refusals.record(f"default/{meta['name']}", meta["uid"], ["pool p exhausted"])
    await bind(rest, rest_seed_pod)
    assert meta["uid"] not in {e.uid for e in refusals.recent()}  # bind forgets its refusals
    # Refused here, bound through another replica: it holds an address now.
    refusals.record(f"default/{meta['name']}", meta["uid"], ["pool p exhausted"])
    page = await get(rest, "/v1/refusals")
    assert page["capacity"] == refusals.CAPACITY
    by_uid = {i["uid"]: i for i in page["items"]}
    assert [i["uid"] for i in page["items"]] == [meta["uid"], stuck, "old-uid"]
    cart = by_uid[stuck]
    assert (cart["pod"], cart["status"], cart["times"], cart["nodes"], cart["holds"]) == (
        "shop/cart-0", "held back", 1, 3, [])
    assert cart["reasons"] == [
        {"reason": "pool p exhausted", "nodes": 2, "examples": ["node-0", "node-1"]},
        {"reason": "node … is in no routable subnet", "nodes": 1, "examples": ["node-x"]}]
    seed = by_uid[meta["uid"]]
    assert seed["status"] == "got an address" and len(seed["holds"]) == 1
    recent = await get(rest, "/v1/refusals", minutes=10, limit=1)
    assert [i["uid"] for i in recent["items"]] == [meta["uid"]]
    for bad in ({"limit": 0}, {"limit": 10_000}, {"minutes": -1}, {"minutes": "x"}):
        resp = await rest.client.get("/v1/refusals", params=bad, headers=READ)
        assert resp.status_code == 422, bad
    assert (await rest.client.get("/v1/refusals")).status_code == 401
    refusals.RECENT.clear()


async def test_a_real_filter_refusal_reaches_the_list(rest: RunningService,
                                                     fake_apiserver: FakeApiServer) -> None:
    """kube-scheduler's filter call for a pod no node can serve: the extender records why."""
    refusals.RECENT.clear()
    pod = fake_apiserver.create("pods", make_pod("stuck-0", namespace="shop",
                                                 annotations=NETWORKS))
    resp = await rest.client.post("/v1/filter", json={"Pod": pod, "Nodes": None,
                                                      "NodeNames": ["node-x"]})
    assert resp.status_code == 200 and resp.json()["NodeNames"] == [], resp.text
    (item,) = (await get(rest, "/v1/refusals"))["items"]
    assert (item["pod"], item["uid"], item["status"], item["nodes"]) == (
        "shop/stuck-0", pod["metadata"]["uid"], "held back", 1)
    assert item["reasons"] == [{"reason": "node … is in no routable subnet of any pool",
                                "nodes": 1, "examples": ["node-x"]}]
    refusals.RECENT.clear()


# -- usage ----------------------------------------------------------------------------------
async def test_the_trend_is_rebuilt_from_the_audit_trail(rest: RunningService,
                                                         rest_seed_pod: dict[str, Any]) -> None:
    await bind(rest, rest_seed_pod)
    resp = await rest.client.post("/v1/addresses/10.11.135.1/reserve", headers=ADMIN,
                                  json={"note": "router"})
    assert resp.status_code == 200, resp.text
    trend = await get(rest, "/v1/usage/trend", hours=2, points=5)
    assert trend["complete"] is True and trend["rows_read"] >= 2
    assert trend["step_seconds"] == 1800
    (pool,) = trend["pools"]
    assert pool["name"] == POOL and pool["total"] == 2045
    first, last = pool["points"][0], pool["points"][-1]
    assert (first["used"], first["allocated"], first["reserved"]) == (0, 0, 0)
    assert (last["used"], last["allocated"], last["reserved"]) == (2, 1, 1)
    for bad in ({"points": 1}, {"points": 501}, {"hours": 0}, {"hours": 10_000}):
        resp = await rest.client.get("/v1/usage/trend", params=bad, headers=READ)
        assert resp.status_code == 422, bad


async def test_node_subnets_count_nodes_and_the_addresses_used_on_them(
        rest: RunningService, rest_seed_pod: dict[str, Any]) -> None:
    await bind(rest, rest_seed_pod, node="node-1")
    doc = await get(rest, "/v1/usage/node-subnets")
    assert doc == {"items": [{"pool": POOL, "elsewhere": 0, "node_subnets": [
        {"subnet": "10.10.100.0/24", "nodes": 2, "allocated": 1}]}]}


# -- workloads ------------------------------------------------------------------------------
async def test_workloads_put_each_event_to_the_release_rule(
        rest: RunningService, rest_seed_pod: dict[str, Any],
        fake_apiserver: FakeApiServer) -> None:
    fake_apiserver.create("deployments", make_deployment("test-busybox", replicas=3))
    await bind(rest, rest_seed_pod)  # policy never, ReplicaSet of deploy/default/test-busybox
    plain = fake_apiserver.create("pods", make_pod("one-off", annotations=NETWORKS))
    await bind(rest, plain)  # default policy: not a fixed address
    page = await get(rest, "/v1/workloads")
    assert page["total"] == 1
    (w,) = page["items"]
    assert (w["key"], w["kind"], w["kind_label"], w["namespace"], w["name"], w["policy"],
            w["replicas"], w["exists"]) == ("deploy/default/test-busybox", "deployment",
                                           "Deployment", "default", "test-busybox", "never", 3,
                                           True)
    assert [a["pod"] for a in w["addresses"]] == [f"default/{rest_seed_pod['metadata']['name']}"]
    assert [(o["event"], o["keep"]) for o in w["outcomes"]] == [
        ("a pod is deleted (its replacement takes a kept address)", True),
        ("scaled down to 2 replicas", True),
        ("scaled to 0 replicas", True),
        ("Deployment is deleted", True)]
    assert w["outcomes"][-1]["reason"] == "deploy/default/test-busybox deleted; kept (policy never)"
    assert (await get(rest, "/v1/workloads", kind="statefulset"))["items"] == []
    assert (await get(rest, "/v1/workloads", namespace="other"))["total"] == 0
    assert (await get(rest, "/v1/workloads", search="busybox"))["total"] == 1
    # The owner is gone: what the controllers decide for its addresses, nothing else.
    fake_apiserver.delete("deployments", "test-busybox", namespace="default")
    (gone,) = (await get(rest, "/v1/workloads"))["items"]
    assert gone["exists"] is False and gone["replicas"] is None
    assert [(o["event"], o["keep"], o["reason"]) for o in gone["outcomes"]] == [(
        "Deployment default/test-busybox no longer exists", True,
        "deploy/default/test-busybox deleted; kept (policy never)")]
    for bad in ({"limit": 0}, {"kind": "daemonset"}):
        resp = await rest.client.get("/v1/workloads", params=bad, headers=READ)
        assert resp.status_code == 422, bad


# -- reconciler dry run ---------------------------------------------------------------------
async def test_a_dry_run_finds_what_repair_would_fix_and_changes_nothing(
        rest: RunningService, fake_apiserver: FakeApiServer) -> None:
    reconciler = rest.runtime.reconciler
    assert reconciler is not None
    await wait_until(lambda: reconciler.last_report is not None, timeout=30)
    last, runs = reconciler.last_report, reconciler.runs
    fake_apiserver.create("pods", make_pod("legacy-0", node_name="node-0", phase="Running",
                                           pod_ip="10.11.130.7", annotations=NETWORKS))
    one, two = await asyncio.gather(get(rest, "/v1/reconciler/dry-run"),
                                    get(rest, "/v1/reconciler/dry-run"))
    assert one == two  # callers at the same time share one pass
    assert one["applied"] is False and one["error"] is None
    (finding,) = [f for f in one["findings"] if f["kind"] == "unknown_to_database"]
    assert (finding["address"], finding["pod"], finding["action"]) == (
        "10.11.130.7", "default/legacy-0", "none")
    assert finding["repair"] == "adopt the address for the running pod, if it is free"
    assert (await get(rest, "/v1/addresses/10.11.130.7"))["state"] == "free"
    assert reconciler.last_report is last and reconciler.runs == runs
    assert (await rest.client.get("/v1/reconciler/dry-run")).status_code == 401


async def test_a_dry_run_needs_the_controllers(db_url: str, fake_apiserver: FakeApiServer,
                                               tmp_path: Path) -> None:
    fake_apiserver.create("nodes", make_node("node-0", internal_ip="10.10.100.10"))
    settings = rest_settings(db_url, fake_apiserver, tmp_path, controllers_enabled=False)
    async with running_rest_service(settings) as svc:
        resp = await svc.client.get("/v1/reconciler/dry-run", headers=READ)
        assert resp.status_code == 503
        assert "ipam check" in resp.json()["error"]["message"]
