"""Hostile pool configs through the REST import: each gets a clear error and changes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text

from tests.api.rest_conftest import ADMIN, rest_fixture  # noqa: F401
from tests.service_harness import RunningService

GOOD = {"routableSubnet": "10.10.100.0/24", "ips": ["10.11.128.1~10.11.135.253"],
        "subnet": "10.11.128.0/21", "gateway": "10.11.135.254", "vlan": 1200}


async def state(svc: RunningService) -> tuple[Any, ...]:
    async with svc.runtime.db.engine.connect() as conn:
        pools = (await conn.execute(text(
            "SELECT name, vlan, host(gateway) FROM pools ORDER BY name"))).all()
        ranges = (await conn.execute(text('SELECT host("first"), host("last") FROM ranges'))).all()
        audit = await conn.scalar(text("SELECT count(*) FROM audit"))
    return tuple(pools), tuple(ranges), audit


@pytest.mark.parametrize(("body", "status", "message"), [
    (json.dumps([GOOD, {**GOOD, "ips": ["10.11.130.1~10.11.130.9"]}]), 422, "overlaps"),
    (json.dumps([{**GOOD, "ips": ["10.11.127.1~10.11.128.5"]}]), 422, "not inside subnet"),
    (json.dumps([{**GOOD, "ips": ["10.11.135.250~10.11.135.254"]}]), 422, "includes the gateway"),
    (json.dumps([{**GOOD, "vlan": 5000}]), 422, "outside 0-4094"),
    (json.dumps([GOOD]) + " " * (10 * 1024 * 1024), 413, "request body exceeds"),
    (json.dumps([GOOD]) + " " * (4 * 1024 * 1024), 422, "the limit is"),
    ("[" * 200_000, 422, ""),
    ("data:\n  floatingips: 7\n", 422, "no data.floatingips|must be a JSON string|expected"),
])
async def test_hostile_configs_change_nothing(rest: RunningService, body: str, status: int,
                                              message: str) -> None:
    before = await state(rest)
    resp = await rest.client.post("/v1/pools/import", content=body.encode(), headers=ADMIN)
    assert resp.status_code == status, resp.text[:300]
    error = resp.json()["error"]
    assert error["message"]
    if message:
        import re

        assert re.search(message, error["message"]), error["message"]
    assert await state(rest) == before
