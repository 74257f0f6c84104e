"""Security properties that are easy to lose: tokens never reach the logs, a wrong token gets
nothing, and a hostile SQL-looking input is only ever a bound parameter."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.api.conftest import SEED_NODES
from tests.api.rest_conftest import ADMIN_TOKEN, bearer, rest_settings, running_rest_service
from tests.fakeapi.objects import make_node
from tests.fakeapi.server import FakeApiServer
from tests.service_harness import RunningService


@pytest.fixture
async def secured(db_url: str, fake_apiserver: FakeApiServer, tmp_path: Path
                  ) -> AsyncIterator[RunningService]:
    for name, ip in SEED_NODES.items():
        fake_apiserver.create("nodes", make_node(name, internal_ip=ip))
    async with running_rest_service(rest_settings(db_url, fake_apiserver, tmp_path,
                                                  log_level="DEBUG")) as svc:
        yield svc


async def test_tokens_never_appear_in_logs(secured: RunningService,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-token-that-must-not-be-logged-0123456789"
    assert (await secured.client.get("/v1/addresses", headers=bearer(ADMIN_TOKEN))
            ).status_code == 200
    assert (await secured.client.get("/v1/addresses", headers=bearer(wrong))).status_code == 401
    assert (await secured.client.post("/v1/addresses/10.11.128.9/reserve",
                                      headers=bearer(wrong))).status_code == 401
    assert caplog.records, "nothing was logged at DEBUG: the check would prove nothing"
    assert ADMIN_TOKEN not in caplog.text and wrong not in caplog.text


async def test_sql_looking_input_is_data(secured: RunningService) -> None:
    hostile = "x'; DROP TABLE audit; --"
    params = {"namespace": hostile, "owner": hostile}
    resp = await secured.client.get("/v1/addresses", params=params, headers=bearer(ADMIN_TOKEN))
    assert resp.status_code == 200 and resp.json()["items"] == []
    resp = await secured.client.get("/v1/audit", params={"actor": hostile},
                                    headers=bearer(ADMIN_TOKEN))
    assert resp.status_code == 200
    resp = await secured.client.get(f"/v1/pods/{hostile}/x/ips", headers=bearer(ADMIN_TOKEN))
    assert resp.status_code in (404, 422)
    assert (await secured.client.get("/v1/audit", headers=bearer(ADMIN_TOKEN))).status_code == 200


async def test_nul_characters_are_refused_not_500(secured: RunningService) -> None:
    # Found by schemathesis: PostgreSQL text cannot hold NUL; that is bad input, not a crash.
    resp = await secured.client.get("/v1/addresses", params={"namespace": "a\x00b"},
                                    headers=bearer(ADMIN_TOKEN))
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "invalid"
    resp = await secured.client.post("/v1/bind", json={
        "PodName": "p\x00", "PodNamespace": "default", "PodUID": "u\x00", "Node": "node-0"})
    assert resp.status_code in (200, 400) and resp.json()["Error"]
