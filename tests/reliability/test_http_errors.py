"""Failures that used to be 500s (issue 14, item 7): each is now the status it means, in the
error envelope, and changes nothing.

- every pooled database connection busy past the pool timeout: 503 ``unavailable`` (REST) and
  an extender ``Error``, not a 500 in plain text;
- a 5,000-digit integer in a pool config: 422, not the decoder's ValueError as a 500;
- a chunked body over the limit: 413, also on routes whose framework turns a failed read into
  its own 422.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.api.rest_conftest import ADMIN, rest_fixture, rest_settings, running_rest_service  # noqa: F401
from tests.conftest import FIXTURES, load_fixture
from tests.fakeapi.objects import make_node
from tests.fakeapi.server import FakeApiServer
from tests.service_harness import RunningService

GOOD = {"routableSubnet": "10.10.100.0/24", "ips": ["10.11.128.1~10.11.135.253"],
        "subnet": "10.11.128.0/21", "gateway": "10.11.135.254", "vlan": 1200}
HUGE = "9" * 5000


async def test_pool_timeout_is_503_in_the_envelope(db_url: str, fake_apiserver: FakeApiServer,
                                                   tmp_path: Path) -> None:
    fake_apiserver.create("nodes", make_node("node-0", internal_ip="10.10.100.10"))
    fake_apiserver.create("pods", copy.deepcopy(
        load_fixture("extender/filter-request-nodecache.json")["Pod"]))
    settings = rest_settings(db_url, fake_apiserver, tmp_path, controllers_enabled=False,
                             database_pool_size=2, database_max_overflow=0,
                             database_pool_timeout_seconds=0.2, catalog_refresh_seconds=3600)
    async with running_rest_service(settings) as svc, AsyncExitStack() as held:
        for _ in range(2):  # every connection of the pool, busy
            await held.enter_async_context(svc.runtime.db.engine.connect())
        resp = await svc.client.get("/v1/addresses", headers=ADMIN)
        assert resp.status_code == 503, resp.text
        assert resp.headers["content-type"] == "application/json"
        error = resp.json()["error"]
        assert error["code"] == "unavailable" and "pool timeout" in error["message"]
        body = (FIXTURES / "extender/bind-request.json").read_bytes()
        bind = await svc.client.post("/v1/bind", content=body)
        assert bind.status_code == 200 and "database unavailable" in bind.json()["Error"]
        imported = await svc.client.post("/v1/pools/import", json=[GOOD], headers=ADMIN)
        assert imported.status_code == 503, imported.text
        assert imported.json()["error"]["code"] == "unavailable"
    # released: the same call works again
    async with running_rest_service(settings) as svc:
        assert (await svc.client.get("/v1/addresses", headers=ADMIN)).status_code == 200


@pytest.mark.parametrize("body", [
    json.dumps([GOOD])[:-2] + ', "vlan": ' + HUGE + "}]",
    f'[{{"routableSubnet": "10.10.100.0/24", "ips": ["10.11.128.1"], "subnet": '
    f'"10.11.128.0/21", "vlan": {HUGE}}}]',
    "apiVersion: v1\nkind: ConfigMap\ndata:\n  floatingips: '" + json.dumps(
        [{**GOOD, "vlan": 1}]).replace('"vlan": 1', f'"vlan": {HUGE}') + "'\n",
    f"- vlan: {HUGE}\n",
], ids=["json-vlan", "json-only-digits", "configmap-yaml", "yaml-list"])
async def test_a_5000_digit_integer_in_a_pool_config_is_422(rest: RunningService,
                                                            body: str) -> None:
    async with rest.runtime.db.engine.connect() as conn:
        before = await conn.scalar(text("SELECT count(*) FROM audit"))
    resp = await rest.client.post("/v1/pools/import", content=body.encode(), headers=ADMIN)
    assert resp.status_code == 422, resp.text[:300]
    assert resp.json()["error"]["code"] in ("invalid", "invalid_config")
    async with rest.runtime.db.engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM audit")) == before


@pytest.fixture
async def small_limit(db_url: str, fake_apiserver: FakeApiServer, tmp_path: Path
                      ) -> AsyncIterator[RunningService]:
    settings = rest_settings(db_url, fake_apiserver, tmp_path, max_body_bytes=4096)
    async with running_rest_service(settings) as svc:
        yield svc


async def _chunks(total: int, size: int = 1000) -> AsyncIterator[bytes]:
    """A body of ``total`` bytes (blanks), sent chunked (no Content-Length)."""
    sent = 0
    while sent < total:
        part = b" " * min(size, total - sent)
        sent += len(part)
        yield part


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/ip"),  # a pydantic body: FastAPI turned the failed read into its 422
    ("POST", "/v1/pool"),
    ("POST", "/v1/owners/release"),
    ("POST", "/v1/pools/import"),
    ("POST", "/v1/filter"),
    ("POST", "/v1/bind"),
])
async def test_a_chunked_body_over_the_limit_is_413(small_limit: RunningService, method: str,
                                                    path: str) -> None:
    resp = await small_limit.client.request(method, path, content=_chunks(20_000),
                                            headers={**ADMIN, "Content-Type": "application/json"})
    assert "content-length" not in resp.request.headers  # really chunked
    assert resp.status_code == 413, resp.text[:300]
    assert resp.json()["error"]["code"] == "too_large"
    # A body under the limit still reaches the route (and is judged there).
    small = await small_limit.client.request(method, path, content=_chunks(100),
                                             headers={**ADMIN,
                                                      "Content-Type": "application/json"})
    assert small.status_code != 413


async def test_a_body_of_many_bad_items_gets_a_bounded_answer(rest: RunningService) -> None:
    """9,000 invalid items are 9,000 validation errors (or more): the answer lists 50 and
    counts the rest, instead of being many times the request."""
    body = b'{"ips": [' + b"{}," * 9_000 + b"{}]}"
    resp = await rest.client.post("/v1/ip", content=body,
                                  headers={**ADMIN, "Content-Type": "application/json"})
    assert resp.status_code == 400
    fields = resp.json()["error"]["details"]["fields"]
    assert len(fields) == 51 and len(resp.content) < len(body)
    assert fields[-1]["message"].endswith("more errors not listed")
