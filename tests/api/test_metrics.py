"""`/metrics` scraped and parsed: extender latency, address changes, pool usage, watches."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.api.test_extender import post, raw
from tests.service_harness import RunningService


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_after_a_bind(service: RunningService, seed_pod: dict[str, Any]) -> None:
    await post(service, "filter", raw("extender/filter-request-nodecache.json"))
    assert (await post(service, "bind", raw("extender/bind-request.json"))).json() == {
        "Error": ""}
    await post(service, "bind", b"{broken")
    resp = await service.client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    got = samples(resp.text)
    assert got[("ipam_extender_request_seconds_count",
                (("outcome", "ok"), ("verb", "filter")))] == 1
    assert got[("ipam_extender_request_seconds_count",
                (("outcome", "ok"), ("verb", "bind")))] == 1
    assert got[("ipam_extender_request_seconds_count",
                (("outcome", "bad_request"), ("verb", "bind")))] == 1
    assert got[("ipam_address_changes_total",
                (("action", "allocate"), ("pool", "10.11.128.0/21")))] == 1
    pool = (("pool", "10.11.128.0/21"), ("vlan", "1200"))
    assert got[("ipam_pool_addresses", (*pool[:1], ("state", "allocated"), pool[1]))] == 1
    assert got[("ipam_pool_addresses", (*pool[:1], ("state", "free"), pool[1]))] == 2044
    assert got[("ipam_watch_up", (("resource", "nodes"),))] == 1
    assert ("ipam_watch_restarts_total", (("resource", "pods"),)) in got
    assert got[("ipam_leader", ())] == 1
    assert resp.headers["x-request-id"]


async def test_request_id_is_echoed_and_lands_in_audit(
    service: RunningService, seed_pod: dict[str, Any]
) -> None:
    resp = await service.client.post("/v1/bind", content=raw("extender/bind-request.json"),
                                     headers={"X-Request-Id": "req-42"})
    assert resp.headers["x-request-id"] == "req-42" and resp.json() == {"Error": ""}
    from sqlalchemy import text

    async with service.runtime.db.engine.connect() as conn:
        ids = (await conn.execute(text("SELECT request_id FROM audit WHERE action='allocate'"))
               ).scalars().all()
    assert ids == ["req-42"]
