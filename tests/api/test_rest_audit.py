"""The audit trail over REST: one row per mutation, filters, newest-first keyset pages."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from ipam.services.allocation import Actor
from tests.api.rest_conftest import (
    ADMIN,
    CNI,
    READ,
    bind,
    rest_fixture,  # noqa: F401
    rest_seed_pod_fixture,  # noqa: F401
)
from tests.service_harness import RunningService, wait_until
from tests.services.helpers import make_pod


async def audit(svc: RunningService, **params: Any) -> Any:
    resp = await svc.client.get("/v1/audit", params=params, headers=READ)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_every_mutation_leaves_an_audit_row_with_actor_and_request_id(
    rest: RunningService, rest_seed_pod: dict[str, Any]
) -> None:
    await bind(rest, rest_seed_pod)  # 10.11.128.1 for the CNI report
    kept = make_pod("kept-one", uid="kept-uid")
    await rest.runtime.allocator.allocate(kept, rest.runtime.catalog.pools, node="node-0",
                                          actor=Actor("test"))  # 10.11.128.2
    await rest.runtime.allocator.release_pod("kept-uid", keep=True, actor=Actor("test"),
                                             reason="gone")
    calls: list[tuple[str, str, Any, dict[str, str], str, str]] = [
        ("POST", "/v1/addresses/10.11.128.9/reserve", {"note": "n"}, ADMIN, "reserve",
         "operator:alice"),
        ("POST", "/v1/addresses/10.11.128.9/release", None, ADMIN, "release", "operator:alice"),
        ("POST", "/v1/addresses/10.11.128.8/reserve", None, ADMIN, "reserve", "operator:alice"),
        ("POST", "/v1/owners/release", {"owner": "reserved/alice"}, ADMIN, "release",
         "operator:alice"),
        ("POST", "/v1/pools/import",
         [{"routableSubnet": "10.10.100.0/24", "ips": ["10.11.128.1~10.11.128.200"],
           "subnet": "10.11.128.0/21", "gateway": "10.11.135.254", "vlan": 1200}],
         ADMIN, "pools.import", "operator:alice"),
        ("POST", "/v1/pods/default/test-busybox-5d8f7c9b6-abcde/container-deleted",
         {"container_id": "abc", "uid": rest_seed_pod["metadata"]["uid"]}, CNI, "cni.del",
         "cni:node"),
        ("POST", "/v1/ip", {"ips": [{"ip": "10.11.128.2"}]}, ADMIN, "release", "operator:alice"),
        ("POST", "/v1/pool", {"name": "gp", "size": 2, "preAllocateIP": True}, ADMIN,
         "pool.set", "operator:alice"),
        ("DELETE", "/v1/pool/gp", None, ADMIN, "pool.delete", "operator:alice"),
    ]
    for i, (method, path, body, headers, action, actor) in enumerate(calls):
        rid = f"req-{i}"
        resp = await rest.client.request(method, path, json=body,
                                         headers={**headers, "X-Request-Id": rid})
        assert resp.status_code < 300, (path, resp.text)
        assert resp.headers["x-request-id"] == rid
        rows = (await audit(rest, actor=actor, action=action))["items"]
        mine = [r for r in rows if r["request_id"] == rid]
        assert mine, f"{method} {path} left no {action} row by {actor}"
    pre = (await audit(rest, action="preallocate"))["items"]
    assert len(pre) == 2 and {r["owner"] for r in pre} == {"pool/gp"}
    freed = (await audit(rest, action="release"))["items"]
    assert {r["reason"] for r in freed if r["request_id"] == "req-8"} == {"pool gp deleted"}
    [cni] = (await audit(rest, action="cni.del"))["items"]
    assert (cni["address"], cni["pod_name"], cni["pod_uid"]) == (
        "10.11.128.1", "test-busybox-5d8f7c9b6-abcde", rest_seed_pod["metadata"]["uid"])
    assert cni["before"] is None and cni["after"] is None and "abc" in cni["reason"]


async def test_filters_and_newest_first(rest: RunningService,
                                        rest_seed_pod: dict[str, Any]) -> None:
    # ``since`` is inclusive: the window starts once the clock has passed the newest row the
    # fixture left (the start-up's pools.import), so that row is outside it.
    newest = datetime.fromisoformat((await audit(rest, limit=1))["items"][0]["at"])
    await wait_until(lambda: datetime.now(UTC) > newest)
    start = datetime.now(UTC)
    await bind(rest, rest_seed_pod)
    uid = rest_seed_pod["metadata"]["uid"]
    await rest.client.post("/v1/addresses/10.11.128.1/release?force=true", headers=ADMIN)
    await rest.client.post("/v1/addresses/10.11.128.1/reserve", headers=ADMIN)
    by_address = (await audit(rest, address="10.11.128.1"))["items"]
    assert [r["action"] for r in by_address] == ["reserve", "release", "allocate"]
    assert by_address[2]["actor"] == "scheduler"
    assert by_address[0]["id"] > by_address[1]["id"] > by_address[2]["id"]
    assert [r["action"] for r in (await audit(rest, pod_uid=uid))["items"]] == [
        "release", "allocate"]
    assert [r["action"] for r in (await audit(
        rest, namespace="default", pod="test-busybox-5d8f7c9b6-abcde"))["items"]] == [
        "release", "allocate"]
    assert [r["action"] for r in (await audit(
        rest, owner="deploy/default/test-busybox"))["items"]] == ["release", "allocate"]
    assert len((await audit(rest, actor="operator:alice"))["items"]) == 2
    assert len((await audit(rest, since=start.isoformat()))["items"]) == 3
    assert (await audit(rest, until=start.isoformat(), action="allocate"))["items"] == []
    naive = (start + timedelta(hours=1)).replace(tzinfo=None).isoformat()
    assert (await audit(rest, since=naive))["items"] == []
    bad = await rest.client.get("/v1/audit", params={"address": "10.11"}, headers=READ)
    assert bad.status_code == 422 and bad.json()["error"]["details"]["field"] == "address"


async def test_audit_pages_neither_skip_nor_repeat_while_rows_are_appended(
    rest: RunningService,
) -> None:
    for i in range(30):
        assert (await rest.client.post(f"/v1/addresses/10.11.129.{i + 1}/reserve",
                                       headers=ADMIN)).status_code == 200
    existing = [r["id"] for r in (await audit(rest, limit=1000))["items"]]
    appended = 0
    done = asyncio.Event()

    async def append() -> None:
        nonlocal appended
        n = 0
        while not done.is_set():
            address = f"10.11.130.{n % 250 + 1}"
            for verb in ("reserve", "release"):
                await rest.client.post(f"/v1/addresses/{address}/{verb}", headers=ADMIN)
                appended += 1
            n += 1

    task = asyncio.create_task(append())
    seen: list[int] = []
    cursor = None
    try:
        while True:
            page = await audit(rest, limit=4, **({"cursor": cursor} if cursor else {}))
            seen += [r["id"] for r in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
            # Every next page is read after at least one more row was appended.
            await wait_until(lambda before=appended: appended > before)
    finally:
        done.set()
        await task
    assert appended >= 4, "no rows were appended while paging"
    assert len(seen) == len(set(seen)), "a row came twice"
    assert seen == sorted(seen, reverse=True), "not newest first"
    assert set(existing) <= set(seen), "a row that existed throughout was skipped"
    other = await rest.client.get("/v1/audit", params={"cursor": cursor or "x", "limit": 4,
                                                       "action": "reserve"}, headers=READ)
    assert other.status_code == 422
