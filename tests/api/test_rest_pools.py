"""Pools over REST: usage per pool, range and VLAN; config import with dry run."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text

from tests.api.rest_conftest import (
    ADMIN,
    READ,
    bind,
    rest_fixture,  # noqa: F401
    rest_seed_pod_fixture,  # noqa: F401
)
from tests.conftest import FIXTURES
from tests.service_harness import RunningService

SEED_YAML = (FIXTURES / "galaxy/floatingip-config.yaml").read_text()
TWO_RANGES = [
    {"routableSubnet": "10.10.100.0/24", "ips": ["10.11.128.1~10.11.128.10",
                                                 "10.11.129.1~10.11.129.5"],
     "subnet": "10.11.128.0/21", "gateway": "10.11.135.254", "vlan": 1200},
    {"routableSubnet": "10.10.100.0/24", "ips": ["10.12.0.1~10.12.0.4"],
     "subnet": "10.12.0.0/24", "gateway": "10.12.0.254", "vlan": 1200},
    {"routableSubnet": "10.20.0.0/24", "ips": ["10.13.0.1~10.13.0.3"],
     "subnet": "10.13.0.0/24", "name": "plain"},
]


async def import_(svc: RunningService, body: str | list[Any], dry_run: bool = False,
                  content_type: str = "application/json") -> Any:
    content = body if isinstance(body, str) else json.dumps(body)
    return await svc.client.post(f"/v1/pools/import?dry_run={str(dry_run).lower()}",
                                 content=content,
                                 headers={**ADMIN, "Content-Type": content_type})


async def pools(svc: RunningService) -> Any:
    resp = await svc.client.get("/v1/pools", headers=READ)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_usage_per_pool_range_and_vlan(rest: RunningService,
                                             rest_seed_pod: dict[str, Any]) -> None:
    assert (await import_(rest, TWO_RANGES)).status_code == 200
    await bind(rest, rest_seed_pod)
    for address in ("10.11.129.2", "10.12.0.1", "10.13.0.3"):
        resp = await rest.client.post(f"/v1/addresses/{address}/reserve", headers=ADMIN)
        assert resp.status_code == 200, resp.text
    body = await pools(rest)
    first, second, plain = body["items"]
    assert (first["name"], first["total"], first["allocated"], first["reserved"],
            first["free"]) == ("10.11.128.0/21", 15, 1, 1, 13)
    assert [(r["range"], r["total"], r["used"], r["free"]) for r in first["ranges"]] == [
        ("10.11.128.1~10.11.128.10", 10, 1, 9), ("10.11.129.1~10.11.129.5", 5, 1, 4)]
    assert first["ranges"][0]["allocated"] == 1 and first["ranges"][1]["reserved"] == 1
    assert second["ranges"] == [{"range": "10.12.0.1~10.12.0.4", "total": 4, "allocated": 0,
                                 "kept": 0, "reserved": 1, "quarantined": 0, "used": 1,
                                 "free": 3}]
    assert plain["vlan"] is None and plain["name"] == "plain"
    assert body["vlans"] == [
        {"vlan": 1200, "pools": ["10.11.128.0/21", "10.12.0.0/24"], "total": 19,
         "allocated": 1, "kept": 0, "reserved": 2, "quarantined": 0, "used": 3, "free": 16},
        {"vlan": None, "pools": ["plain"], "total": 3, "allocated": 0, "kept": 0,
         "reserved": 1, "quarantined": 0, "used": 1, "free": 2},
    ]


async def test_dry_run_shows_the_diff_and_changes_nothing(rest: RunningService) -> None:
    before = await pools(rest)
    resp = await import_(rest, TWO_RANGES, dry_run=True)
    assert resp.status_code == 200, resp.text
    diff = resp.json()
    assert diff["dry_run"] is True and diff["empty"] is False
    assert diff["added"] == ["10.12.0.0/24", "plain"] and diff["removed"] == []
    assert diff["changed"]["10.11.128.0/21"]["ips"] == {
        "from": ["10.11.128.1~10.11.135.253"],
        "to": ["10.11.128.1~10.11.128.10", "10.11.129.1~10.11.129.5"]}
    assert await pools(rest) == before
    async with rest.runtime.db.engine.connect() as conn:
        assert await conn.scalar(text(
            "SELECT count(*) FROM audit WHERE action = 'pools.import'")) == 1  # the start-up's


async def test_import_applies_yaml_and_json_and_is_audited_once(rest: RunningService) -> None:
    resp = await import_(rest, TWO_RANGES)
    assert resp.status_code == 200 and resp.json()["dry_run"] is False
    assert [p["name"] for p in (await pools(rest))["items"]] == [
        "10.11.128.0/21", "10.12.0.0/24", "plain"]
    # The extender sees the new pools at once (no wait for the catalog refresh).
    assert {p.name for p in rest.runtime.catalog.pools} == {"10.11.128.0/21", "10.12.0.0/24",
                                                            "plain"}
    back = await rest.client.post("/v1/pools/import", content=SEED_YAML,
                                  headers={**ADMIN, "Content-Type": "application/yaml",
                                           "X-Request-Id": "req-import"})
    assert back.status_code == 200, back.text
    assert back.json()["removed"] == ["10.12.0.0/24", "plain"]
    again = await import_(rest, SEED_YAML, content_type="text/plain")
    assert again.json()["empty"] is True
    async with rest.runtime.db.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT actor, request_id FROM audit WHERE action = 'pools.import' "
            "ORDER BY id"))).all()
    assert [tuple(r) for r in rows[1:]] == [("operator:alice", rows[1][1]),
                                            ("operator:alice", "req-import")]


async def test_bad_config_names_entry_and_field(rest: RunningService) -> None:
    bad = [dict(TWO_RANGES[0], vlan="1200")]
    resp = await import_(rest, bad)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid_config"
    assert (error["details"]["entry"], error["details"]["field"]) == (0, "vlan")
    for body in ("", "{not yaml: [", "[" * 5000, "[" * 50000 + "]" * 50000, "- 1\n- 2\n",
                 "kind: ConfigMap\ndata: {}\n", "\xff"):
        resp = await import_(rest, body)
        assert resp.status_code == 422, (body[:20], resp.text)
        assert resp.json()["error"]["code"] in ("invalid", "invalid_config")


async def test_import_that_would_strand_an_address_in_use_is_refused(
    rest: RunningService, rest_seed_pod: dict[str, Any]
) -> None:
    await bind(rest, rest_seed_pod)  # holds 10.11.128.1
    shrunk = [dict(TWO_RANGES[0], ips=["10.11.129.1~10.11.129.5"])]
    for dry_run in (True, False):
        resp = await import_(rest, shrunk, dry_run=dry_run)
        assert resp.status_code == 409, resp.text
        assert resp.json()["error"]["details"]["addresses"][0]["address"] == "10.11.128.1"
