"""Operators' address endpoints on the real service: filters, keyset pages, reserve, release."""

from __future__ import annotations

import asyncio
import ipaddress
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
from tests.fakeapi.server import FakeApiServer
from tests.service_harness import RunningService
from tests.services.helpers import make_pod

POOL = "10.11.128.0/21"
SEED_OWNER = "deploy/default/test-busybox"


async def audit_rows(svc: RunningService, action: str) -> list[dict[str, Any]]:
    async with svc.runtime.db.engine.connect() as conn:
        rows = await conn.execute(text(
            "SELECT actor, action, host(address) AS address, owner_key, before, after, reason, "
            "request_id FROM audit WHERE action = :a ORDER BY id"), {"a": action})
        return [dict(r._mapping) for r in rows]


async def get(svc: RunningService, path: str, **params: Any) -> Any:
    resp = await svc.client.get(path, params=params, headers=READ)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_listing_shows_free_addresses_that_have_no_row(rest: RunningService) -> None:
    page = await get(rest, "/v1/addresses", pool=POOL, limit=3)
    assert [i["address"] for i in page["items"]] == ["10.11.128.1", "10.11.128.2", "10.11.128.3"]
    first = page["items"][0]
    assert first["state"] == "free" and first["updated_at"] is None
    assert (first["prefix_length"], first["gateway"], first["vlan"]) == (21, "10.11.135.254", 1200)
    following = await get(rest, "/v1/addresses", pool=POOL, limit=3, cursor=page["next_cursor"])
    assert following["items"][0]["address"] == "10.11.128.4"
    tail = await get(rest, "/v1/addresses", subnet="10.11.135.0/24", limit=1000)
    assert len(tail["items"]) == 254 and tail["next_cursor"] is None
    assert tail["items"][-1]["address"] == "10.11.135.253"
    assert (await get(rest, "/v1/addresses", pool="no-such-pool"))["items"] == []


async def test_filters_select_what_a_pod_holds(rest: RunningService,
                                               rest_seed_pod: dict[str, Any]) -> None:
    await bind(rest, rest_seed_pod)
    expected = ["10.11.128.1"]
    for params in ({"state": "allocated"}, {"namespace": "default"}, {"node": "node-0"},
                   {"owner": SEED_OWNER}, {"owner": "deploy/default/*"},
                   {"pool": POOL, "state": "allocated"}):
        page = await get(rest, "/v1/addresses", **params)
        assert [i["address"] for i in page["items"]] == expected, params
    item = (await get(rest, "/v1/addresses", state="allocated"))["items"][0]
    assert (item["pod_namespace"], item["pod_name"], item["pod_uid"], item["policy"]) == (
        "default", rest_seed_pod["metadata"]["name"], rest_seed_pod["metadata"]["uid"], "never")
    free = await get(rest, "/v1/addresses", state="free", limit=2)
    assert [i["address"] for i in free["items"]] == ["10.11.128.2", "10.11.128.3"]
    for params in ({"state": "kept"}, {"namespace": "other"}, {"owner": "deploy/x/*"},
                   {"node": "node-1"}, {"state": "free", "node": "node-0"}):
        assert (await get(rest, "/v1/addresses", **params))["items"] == [], params
    one = await get(rest, "/v1/addresses/10.11.128.1")
    assert one["state"] == "allocated" and one["owner"] == SEED_OWNER
    assert (await get(rest, "/v1/addresses/10.11.130.7"))["state"] == "free"
    missing = await rest.client.get("/v1/addresses/192.0.2.1", headers=READ)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_cursor_is_tied_to_its_filters(rest: RunningService) -> None:
    page = await get(rest, "/v1/addresses", pool=POOL, limit=2)
    for params in ({"pool": POOL, "state": "free", "cursor": page["next_cursor"]},
                   {"cursor": "bm9wZQ"}, {"cursor": "!!"}):
        resp = await rest.client.get("/v1/addresses", params=params, headers=READ)
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["details"]["field"] == "cursor"


async def test_reserve_keeps_an_address_out_of_allocation_and_is_audited(
    rest: RunningService, rest_seed_pod: dict[str, Any]
) -> None:
    resp = await rest.client.post("/v1/addresses/10.11.128.1/reserve", json={"note": "lb vip"},
                                  headers={**ADMIN, "X-Request-Id": "req-reserve-1"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["state"], body["owner"], body["note"]) == ("reserved", "reserved/alice",
                                                            "lb vip")
    await bind(rest, rest_seed_pod)  # the lowest free address is now .2
    assert (await get(rest, "/v1/addresses", state="allocated"))["items"][0]["address"] == \
        "10.11.128.2"
    [row] = await audit_rows(rest, "reserve")
    assert (row["actor"], row["address"], row["request_id"]) == (
        "operator:alice", "10.11.128.1", "req-reserve-1")
    assert row["before"]["state"] == "free" and row["after"]["state"] == "reserved"
    assert row["reason"] == "lb vip"
    for address, status, code in (("10.11.128.1", 409, "conflict"),
                                  ("10.11.128.2", 409, "conflict"),
                                  ("192.0.2.1", 404, "not_found")):
        again = await rest.client.post(f"/v1/addresses/{address}/reserve", headers=ADMIN)
        assert again.status_code == status, again.text
        assert again.json()["error"]["code"] == code
    assert "allocated to pod default/test-busybox" in (await rest.client.post(
        "/v1/addresses/10.11.128.2/reserve", headers=ADMIN)).json()["error"]["message"]
    assert len(await audit_rows(rest, "reserve")) == 1


async def test_release_of_a_live_pods_address_needs_force(
    rest: RunningService, rest_seed_pod: dict[str, Any]
) -> None:
    await bind(rest, rest_seed_pod)
    refused = await rest.client.post("/v1/addresses/10.11.128.1/release", headers=ADMIN)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert "live pod" in error["message"] and "force=true" in error["message"]
    assert error["details"]["addresses"][0]["pod"] == f"default/{rest_seed_pod['metadata']['name']}"
    assert await audit_rows(rest, "release") == []
    forced = await rest.client.post("/v1/addresses/10.11.128.1/release?force=true",
                                    json={"reason": "pod wedged"},
                                    headers={**ADMIN, "X-Request-Id": "req-force"})
    assert forced.status_code == 200, forced.text
    assert [r["state"] for r in forced.json()["released"]] == ["free"]
    [row] = await audit_rows(rest, "release")
    assert (row["actor"], row["request_id"], row["reason"]) == (
        "operator:alice", "req-force", "pod wedged")
    assert row["before"]["pod_uid"] == rest_seed_pod["metadata"]["uid"]
    assert row["after"]["state"] == "free"
    again = await rest.client.post("/v1/addresses/10.11.128.1/release", headers=ADMIN)
    assert again.status_code == 200 and again.json()["released"] == []
    assert len(await audit_rows(rest, "release")) == 1


async def test_an_address_of_a_pod_known_gone_is_released_without_force(
    rest: RunningService, fake_apiserver: FakeApiServer
) -> None:
    # Allocated to a pod the API server has never heard of (a leak): not live.
    pod = make_pod("ghost", uid="ghost-uid")
    pools = rest.runtime.catalog.pools
    await rest.runtime.allocator.allocate(pod, pools, node="node-0", actor=Actor("test"))
    resp = await rest.client.post("/v1/addresses/10.11.128.1/release", headers=ADMIN)
    assert resp.status_code == 200, resp.text
    assert resp.json()["released"][0]["address"] == "10.11.128.1"


async def test_owner_release_is_all_or_nothing(rest: RunningService,
                                               rest_seed_pod: dict[str, Any]) -> None:
    for address in ("10.11.128.5", "10.11.128.6"):
        assert (await rest.client.post(f"/v1/addresses/{address}/reserve",
                                       headers=ADMIN)).status_code == 200
    resp = await rest.client.post("/v1/owners/release", json={"owner": "reserved/alice"},
                                  headers=ADMIN)
    assert resp.status_code == 200, resp.text
    assert sorted(r["address"] for r in resp.json()["released"]) == ["10.11.128.5",
                                                                    "10.11.128.6"]
    assert len(await audit_rows(rest, "release")) == 2
    await bind(rest, rest_seed_pod)
    refused = await rest.client.post("/v1/owners/release", json={"owner": SEED_OWNER},
                                     headers=ADMIN)
    assert refused.status_code == 409
    forced = await rest.client.post("/v1/owners/release?force=true",
                                    json={"owner": SEED_OWNER}, headers=ADMIN)
    assert forced.status_code == 200 and len(forced.json()["released"]) == 1
    unknown = await rest.client.post("/v1/owners/release", json={"owner": "deploy/x/y"},
                                     headers=ADMIN)
    assert unknown.status_code == 404


async def _small_pool(svc: RunningService) -> list[str]:
    config = [{"routableSubnet": "10.10.100.0/24", "ips": ["10.50.0.1~10.50.0.200"],
               "subnet": "10.50.0.0/24", "gateway": "10.50.0.254", "vlan": 7}]
    await svc.runtime.pools.apply(parse_pool_config(config), actor=Actor("test"))
    await svc.runtime.catalog.refresh(svc.runtime.db)
    return [str(ipaddress.ip_address("10.50.0.0") + i) for i in range(1, 201)]


async def _page_through(svc: RunningService, pause: float, **params: Any) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        page = await get(svc, "/v1/addresses", **query)
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
        await asyncio.sleep(pause)


async def test_pages_neither_skip_nor_repeat_while_addresses_change(
    rest: RunningService,
) -> None:
    everything = await _small_pool(rest)
    allocator, pools, actor = rest.runtime.allocator, rest.runtime.catalog.pools, Actor("test")
    stable = [make_pod(f"stable-{i}") for i in range(40)]
    for pod in stable:
        await allocator.allocate(pod, pools, node="node-0", actor=actor)
    for address in everything[150:160]:
        resp = await rest.client.post(f"/v1/addresses/{address}/reserve", headers=ADMIN)
        assert resp.status_code == 200
    stable_addresses = {str((await allocator.pod_addresses(p.uid))[0].address) for p in stable}
    churned = 0
    done = asyncio.Event()

    async def churn() -> None:
        nonlocal churned
        n = 0
        while not done.is_set():
            batch = [make_pod(f"churn-{n}-{i}") for i in range(4)]
            n += 1
            for pod in batch:
                await allocator.allocate(pod, pools, node="node-0", actor=actor)
            await asyncio.sleep(0)
            for pod in batch:
                await allocator.release_pod(pod.uid, keep=False, actor=actor, reason="churn")
            churned += len(batch)

    task = asyncio.create_task(churn())
    try:
        listed = await _page_through(rest, 0.01, pool="10.50.0.0/24", limit=9)
        allocated = await _page_through(rest, 0.01, state="allocated", limit=4)
    finally:
        done.set()
        await task
    assert churned >= 8, "allocations did not change underneath the pages"
    addresses = [i["address"] for i in listed]
    assert len(addresses) == len(set(addresses)), "a row came twice"
    assert addresses == everything, "a row was skipped (or order broke)"
    states = {i["address"]: i["state"] for i in listed}
    assert {states[a] for a in everything[150:160]} == {"reserved"}
    assert {states[a] for a in stable_addresses} == {"allocated"}
    held = [i["address"] for i in allocated]
    assert len(held) == len(set(held)), "a row came twice"
    assert stable_addresses <= set(held), "an allocation that lasted throughout was skipped"
