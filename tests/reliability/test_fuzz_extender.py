"""Hypothesis throws malformed, mistyped and oversized bodies at the extender: every answer
is a 200 (with or without ``Error``), a 400 or a 413 - never a 5xx - and nothing is reserved
for a request that was not a valid bind."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from tests.conftest import load_fixture
from tests.service_harness import RunningService

FILTER = load_fixture("extender/filter-request-nodecache.json")
BIND = load_fixture("extender/bind-request.json")

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                      st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)
PATHS = [("Pod",), ("Pod", "metadata"), ("Pod", "metadata", "uid"), ("Pod", "metadata", "name"),
         ("Pod", "metadata", "annotations"), ("Pod", "spec"), ("Pod", "spec", "containers"),
         ("NodeNames",), ("Nodes",), ("Pod", "metadata", "ownerReferences")]


def mutate(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    target = out
    for key in path[:-1]:
        target = target.setdefault(key, {}) if isinstance(target, dict) else {}
    if isinstance(target, dict):
        target[path[-1]] = value
    return out


async def reserved(svc: RunningService) -> int:
    async with svc.runtime.db.engine.connect() as conn:
        return int(await conn.scalar(text(
            "SELECT count(*) FROM addresses WHERE state <> 'free'")) or 0)


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def bodies() -> st.SearchStrategy[tuple[str, bytes]]:
    mutated_filter = st.builds(mutate, st.just(FILTER), st.sampled_from(PATHS), json_value)
    mutated_bind = st.builds(lambda k, v: {**BIND, k: v}, st.sampled_from(list(BIND)), json_value)
    return st.one_of(
        st.tuples(st.sampled_from(["filter", "prioritize"]), mutated_filter.map(_dumps)),
        st.tuples(st.just("bind"), mutated_bind.map(_dumps)),
        st.tuples(st.sampled_from(["filter", "prioritize", "bind"]), st.binary(max_size=200)),
        st.tuples(st.sampled_from(["filter", "bind"]),
                  json_value.map(_dumps)),
    )


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=bodies())
async def test_extender_never_fails_with_5xx(service: RunningService,
                                             case: tuple[str, bytes]) -> None:
    verb, body = case
    resp = await service.client.post(f"/v1/{verb}", content=body,
                                     headers={"Content-Type": "application/json"})
    assert resp.status_code in (200, 400, 413), (resp.status_code, resp.text[:300])
    if verb != "prioritize" or resp.status_code != 200:
        assert "Error" in resp.json()
    # The fixture's pod does not exist in the API server, so no bind can succeed: a
    # mutated body must never leave an address behind.
    assert await reserved(service) == 0


async def test_oversized_and_deeply_nested_bodies(service: RunningService) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    resp = await service.client.post("/v1/filter", content=deep)
    assert resp.status_code == 400
    huge_string = orjson.dumps({"Pod": {"metadata": {"name": "x" * 5_000_000}}})
    resp = await service.client.post("/v1/filter", content=huge_string)
    assert resp.status_code == 400
    assert await reserved(service) == 0
