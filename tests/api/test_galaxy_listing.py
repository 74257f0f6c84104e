"""galaxy's ``GET /v1/ip`` filters, sorts, counts and pages in PostgreSQL. It must answer what
the listing it replaced answered (every taken row loaded, filtered and sorted in Python, kept
here as ``reference``), for every kind of owner key, odd ones included, and its pages must tile
the whole result."""

from __future__ import annotations

import json
import math
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from ipam.api.galaxy import FloatingIP, _app_type, _int, floating_ip
from ipam.services.address_admin import AddressAdmin
from ipam.storage.records import AddressRecord
from tests.api.rest_conftest import READ, rest_settings, running_rest_service
from tests.fakeapi.server import FakeApiServer
from tests.service_harness import RunningService

POOLS = [
    {"routableSubnet": "10.10.100.0/24", "ips": ["10.11.128.1~10.11.129.254"],
     "subnet": "10.11.128.0/21", "gateway": "10.11.135.254", "vlan": 1200},
    {"routableSubnet": "10.10.100.0/24", "ips": ["2001:db8:1::1~2001:db8:1::ffff"],
     "subnet": "2001:db8:1::/64"},
]
NAMESPACES = ["default", "prod", "pro", "q%_\\", "ünï", ""]
APPS = ["web", "web-1", "db", "a_b", "x%"]
KINDS = ["TApp", "CronJob", "Job", "tapp", ""]
POLICIES = ["pod-delete", "immutable", "never", None, "other"]


def owner_key(rng: random.Random) -> str:
    ns, app = rng.choice(NAMESPACES), rng.choice(APPS)
    return rng.choice([
        f"deploy/{ns}/{app}", f"sts/{ns}/{app}/{rng.randrange(3)}",
        f"ctrl/{ns}/{rng.choice(KINDS)}/{app}", f"pool/{rng.choice(['p1', 'p2', 'p/x', ''])}",
        f"pod/{ns}/{app}-{rng.randrange(3)}", "reserved/alice",
        # Keys that match no pattern, or almost one.
        f"deploy/{ns}/{app}/extra", f"sts/{ns}/{app}", "pool", "", "pod/x", f"ctrl/{ns}//{app}",
    ])


@pytest.fixture
async def listing(db_url: str, fake_apiserver: FakeApiServer, tmp_path: Path
                  ) -> AsyncIterator[RunningService]:
    """The service with 400 taken addresses of every kind, in both families."""
    pools_file = tmp_path / "pools.json"
    pools_file.write_text(json.dumps(POOLS))
    settings = rest_settings(db_url, fake_apiserver, tmp_path, pools_file=pools_file,
                             controllers_enabled=False)
    async with running_rest_service(settings) as svc:
        rng = random.Random(15)
        async with svc.runtime.db.transaction() as store:
            v4, v6 = (r["id"] for r in await store.sql.rows("SELECT id FROM pools ORDER BY id"))
            for i in range(400):
                state = rng.choice(["allocated", "allocated", "kept", "reserved"])
                family = rng.random() < 0.2
                address = f"2001:db8:1::{i + 1:x}" if family else f"10.11.128.{i % 250 + 1}"
                if not family and i >= 250:
                    address = f"10.11.129.{i - 249}"
                live = state == "allocated"
                await store.sql.execute(
                    "INSERT INTO addresses (pool_id, address, state, owner_key, policy, "
                    "pod_namespace, pod_name, pod_uid) VALUES (:pool, CAST(:address AS inet), "
                    ":state, :owner, :policy, :ns, :pod, :uid)",
                    {"pool": v6 if family else v4, "address": address, "state": state,
                     "owner": owner_key(rng), "policy": rng.choice(POLICIES),
                     "ns": rng.choice(NAMESPACES) if live or rng.random() < 0.3 else None,
                     "pod": rng.choice([*APPS, ""]) if live or rng.random() < 0.3 else None,
                     "uid": f"uid-{i}" if live else None})
        yield svc


# -- the listing as it was: every taken row, filtered and sorted in Python --------------------
def _matches(fip: FloatingIP, keyword: str | None, filters: dict[str, str | None]) -> bool:
    if keyword:
        return any(keyword in (v or "") for v in (fip.namespace, fip.appName, fip.podName,
                                                  fip.poolName))
    return all(getattr(fip, k) == v for k, v in filters.items() if v)


def _sort_key(sort: str | None) -> tuple[Callable[[tuple[AddressRecord, FloatingIP]], Any], bool]:
    def by_ip(i: tuple[AddressRecord, FloatingIP]) -> Any:
        return (i[0].address.version, int(i[0].address))

    keys: dict[str, tuple[Callable[[tuple[AddressRecord, FloatingIP]], Any], bool]] = {
        "namespace asc": (lambda i: i[1].namespace or "", False),
        "namespace desc": (lambda i: i[1].namespace or "", True),
        "podname": (lambda i: i[1].podName or "", False),
        "podname asc": (lambda i: i[1].podName or "", False),
        "podname desc": (lambda i: i[1].podName or "", True),
        "policy": (lambda i: i[1].policy, False),
        "policy asc": (lambda i: i[1].policy, False),
        "policy desc": (lambda i: i[1].policy, True),
        "ip desc": (by_ip, True),
    }
    return keys.get((sort or "").lower(), (by_ip, False))


def reference(rows: list[AddressRecord], params: dict[str, str]) -> dict[str, Any]:
    keyword = params.get("keyword")
    app_type = _app_type(params.get("appType"), params.get("isDeployment"))
    if keyword:
        app_type = None
    filters = {"poolName": params.get("poolName"), "appName": params.get("appName"),
               "podName": params.get("podName"), "namespace": params.get("namespace"),
               "appType": app_type}
    items = [(row, fip) for row in rows if _matches(fip := floating_ip(row), keyword, filters)]
    key, reverse = _sort_key(params.get("sort"))
    items.sort(key=key, reverse=reverse)
    number = _int(params.get("page"), 0, 0, 99999)
    per_page = _int(params.get("size"), 10, 1, 9999)
    start = min(number * per_page, len(items))
    chunk = items[start:start + per_page]
    return {"ips": [fip.ip for _, fip in chunk],
            "fields": [_fields(fip.model_dump(mode="json", exclude_none=True))
                       for _, fip in chunk],
            "last": start + len(chunk) >= len(items), "totalElements": len(items),
            "totalPages": math.ceil(len(items) / per_page), "first": start == 0,
            "numberOfElements": len(chunk), "size": per_page, "number": start // per_page}


def _fields(item: dict[str, Any]) -> dict[str, Any]:
    """What the listing derives from the row (status and releasable come from pods)."""
    return {k: v for k, v in item.items() if k not in ("status", "releasable")}


def answered(body: dict[str, Any]) -> dict[str, Any]:
    content = body.pop("content")
    return {"ips": [i["ip"] for i in content], "fields": [_fields(i) for i in content], **body}


def queries(rng: random.Random, count: int) -> list[dict[str, str]]:
    values = {
        "keyword": ["we", "%", "_", "\\", "ü", "p", "-1", "", "zzz", "/"],
        "namespace": [*NAMESPACES, "nope"], "appName": [*APPS, "nope"],
        "podName": ["web-1", "db-0", "web-1-2", "a_b-1", "x%", "nope", ""],
        "poolName": ["p1", "p2", "p/x", "nope"],
        "appType": ["deployment", "statefulset", "statefulsets", "tapp", ""],
        "isDeployment": ["true", "0", "F"],
        "sort": ["ip", "ip desc", "IP DESC", "namespace", "namespace asc", "namespace desc",
                 "podname", "podname asc", "PodName Desc", "policy", "policy asc",
                 "policy desc", "junk", ""],
        "page": ["0", "1", "3", "40", "-1", "x", "99999999"],
        "size": ["1", "7", "10", "50", "9999", "100000", "0", "junk"],
    }
    out = []
    for _ in range(count):
        chosen = rng.sample(sorted(values), rng.randrange(0, 5))
        out.append({name: rng.choice(values[name]) for name in chosen})
    return out


async def test_answers_as_the_python_listing_did(listing: RunningService) -> None:
    rows = await AddressAdmin(listing.runtime).taken()
    assert len(rows) == 400
    found = 0
    for params in queries(random.Random(7), 250):
        resp = await listing.client.get("/v1/ip", params=params, headers=READ)
        assert resp.status_code == 200, (params, resp.text)
        expected = reference(rows, params)
        assert answered(resp.json()) == expected, params
        found += bool(expected["ips"])
    assert found > 100  # most queries found something: the comparison is not of empty pages


async def test_pages_tile_the_result(listing: RunningService) -> None:
    for params in ({}, {"sort": "namespace desc"}, {"keyword": "e"}, {"appType": "statefulset"},
                   {"sort": "policy", "namespace": "prod"}):
        whole = (await listing.client.get("/v1/ip", params={**params, "size": "9999"},
                                          headers=READ)).json()
        seen: list[str] = []
        for number in range(whole["totalElements"] // 7 + 2):
            page = (await listing.client.get(
                "/v1/ip", params={**params, "size": "7", "page": str(number)},
                headers=READ)).json()
            assert page["totalElements"] == whole["totalElements"]
            assert page["totalPages"] == math.ceil(whole["totalElements"] / 7)
            if number * 7 >= whole["totalElements"]:  # past the end: galaxy's last page number
                assert page["content"] == [] and page["last"]
                assert page["number"] == whole["totalElements"] // 7
                break
            assert page["number"] == number and page["first"] == (number == 0)
            assert page["last"] == ((number + 1) * 7 >= whole["totalElements"])
            seen += [i["ip"] for i in page["content"]]
        assert seen == [i["ip"] for i in whole["content"]], params
        assert len(seen) == len(set(seen)) == whole["totalElements"] > 0, params


@pytest.mark.parametrize("field", ["keyword", "namespace", "appName", "podName", "poolName"])
async def test_a_nul_character_matches_nothing(listing: RunningService, field: str) -> None:
    resp = await listing.client.get("/v1/ip", params={field: "we\x00b"}, headers=READ)
    assert resp.status_code == 200, resp.text
    assert resp.json()["totalElements"] == 0 and resp.json()["content"] == []
