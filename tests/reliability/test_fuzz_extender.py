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

from tests.conftest import FIXTURES, load_fixture
from tests.service_harness import RunningService

FILTER = load_fixture("extender/filter-request-nodecache.json")
FULL = load_fixture("extender/filter-request-fullnodes.json")
FULL_RAW = (FIXTURES / "extender/filter-request-fullnodes.json").read_bytes()
BIND = load_fixture("extender/bind-request.json")

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                      st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)
PATHS = [("Pod",), ("Pod", "metadata"), ("Pod", "metadata", "uid"), ("Pod", "metadata", "name"),
         ("Pod", "metadata", "annotations"), ("Pod", "spec"), ("Pod", "spec", "containers"),
         ("NodeNames",), ("Nodes",), ("Pod", "metadata", "ownerReferences")]


NODE_PATHS = [("Nodes",), ("Nodes", "items"), ("Nodes", "metadata"), ("Nodes", "items", 0),
              ("Nodes", "items", 1, "metadata"), ("Nodes", "items", 1, "metadata", "name"),
              ("Nodes", "items", 2, "metadata", "labels"), ("Nodes", "items", 0, "status"),
              ("Nodes", "items", 0, "status", "addresses"),
              ("Nodes", "items", 0, "status", "addresses", 0),
              ("Nodes", "items", 1, "status", "addresses", 0, "address"),
              ("Nodes", "items", 1, "status", "addresses", 0, "type"), ("NodeNames",)]


def mutate(doc: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    target: Any = out
    for key in path[:-1]:
        if isinstance(target, dict) and isinstance(key, str):
            target = target.setdefault(key, {})
        elif isinstance(target, list) and isinstance(key, int) and key < len(target):
            target = target[key]
        else:
            return out
    last = path[-1]
    fits = (isinstance(last, str) if isinstance(target, dict) else
            isinstance(target, list) and isinstance(last, int) and last < len(target))
    if fits:
        target[last] = value
    return out


def corrupt(data: bytes, at: int, junk: bytes, cut: int) -> bytes:
    """Byte-level damage to a full-node body: ``junk`` replaces ``cut`` bytes at ``at``."""
    at %= len(data)
    return data[:at] + junk + data[at + cut:]


async def reserved(svc: RunningService) -> int:
    async with svc.runtime.db.engine.connect() as conn:
        return int(await conn.scalar(text(
            "SELECT count(*) FROM addresses WHERE state <> 'free'")) or 0)


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def bodies() -> st.SearchStrategy[tuple[str, bytes]]:
    mutated_filter = st.builds(mutate, st.just(FILTER), st.sampled_from(PATHS), json_value)
    mutated_bind = st.builds(lambda k, v: {**BIND, k: v}, st.sampled_from(list(BIND)), json_value)
    mutated_full = st.builds(mutate, st.just(FULL), st.sampled_from(NODE_PATHS), json_value)
    damaged_full = st.builds(corrupt, st.just(FULL_RAW), st.integers(0, len(FULL_RAW)),
                             st.sampled_from([b"", b'"', b"\\", b"\\u", b"\xff", b"\xc3",
                                              b"{", b"]", b",", b"1e400", b"\x00", b" "]),
                             st.integers(0, 3))
    return st.one_of(
        st.tuples(st.sampled_from(["filter", "prioritize"]), mutated_filter.map(_dumps)),
        st.tuples(st.sampled_from(["filter", "prioritize"]), mutated_full.map(_dumps)),
        st.tuples(st.sampled_from(["filter", "prioritize"]), damaged_full),
        st.tuples(st.just("bind"), mutated_bind.map(_dumps)),
        st.tuples(st.sampled_from(["filter", "prioritize", "bind"]), st.binary(max_size=200)),
        st.tuples(st.sampled_from(["filter", "bind"]),
                  json_value.map(_dumps)),
    )


@settings(max_examples=250, deadline=None,
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
    reply = resp.json()
    if verb == "filter" and resp.status_code == 200 and reply.get("Nodes") is not None:
        # Echoed node objects are the request's, as JSON values. The standard library's
        # parser, as orjson refuses numbers past float64 range, which are echoed as sent.
        sent = json.loads(body)["Nodes"]["items"]
        assert all(item in sent for item in reply["Nodes"]["items"])
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
