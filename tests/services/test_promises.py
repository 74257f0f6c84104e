"""Filter promises cannot be used to starve real pods (issue 14, item 2).

Reproduced before: 2,100 filter calls with invented pod UIDs held ~2,000 promises for 30 s and
a real pod was told its pool was exhausted. Now a promise needs a pod the pod watcher has
seen (pending, by namespace, name and UID), a namespace holds at most its cap, and each
refusal is counted (``ipam_filter_promises_refused_total``) and logged at most once a minute.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import generate_latest

from ipam.engine.pod import PodFacts
from ipam.engine.pool_config import parse_pool_config
from ipam.k8s.pods import PodController
from ipam.services.allocation import Actor
from ipam.services.pool_config import PoolConfigService
from ipam.services.runtime import Runtime
from ipam.settings import Settings
from ipam.storage.database import Database
from tests.services.helpers import make_pod

NODE, NODE_IP = "node-1", ipaddress.ip_address("10.10.100.7")
SIZE = 50
POOL = {"routableSubnet": "10.10.100.0/24", "ips": [f"10.90.0.1~10.90.0.{SIZE}"],
        "subnet": "10.90.0.0/24", "gateway": "10.90.0.254"}


async def build(db: Database, **settings: Any) -> Runtime:
    await PoolConfigService(db).apply(parse_pool_config([POOL]), actor=Actor("test"))
    rt = Runtime.build(Settings(controllers_enabled=False, **settings), db)
    await rt.catalog.refresh(db)
    rt.nodes.replace([(NODE, NODE_IP)])
    return rt


async def watching(rt: Runtime, *pods: PodFacts) -> PodController:
    """The real pod watcher's cache, listed with ``pods``, where the controllers keep it."""
    watcher = PodController(rt.promises, rt.placement.recent, None, None)  # type: ignore[arg-type]
    await watcher.on_sync(list(pods))
    rt.pod_watcher = watcher
    return watcher


@pytest.fixture
async def rt(db: Database) -> AsyncIterator[Runtime]:
    runtime = await build(db)
    yield runtime
    await runtime.stop()


def refused(rt: Runtime, reason: str) -> float:
    text = generate_latest(rt.metrics.registry).decode()
    line = f'ipam_filter_promises_refused_total{{reason="{reason}"}} '
    (value,) = [row[len(line):] for row in text.splitlines() if row.startswith(line)]
    return float(value)


async def test_2100_filters_with_invented_uids_do_not_exhaust_a_real_pod_s_pool(
    rt: Runtime, caplog: pytest.LogCaptureFixture,
) -> None:
    real = make_pod("real-app", namespace="shop")
    await watching(rt, real)
    strangers = [make_pod(f"ghost-{n}", namespace=f"ns-{n % 7}") for n in range(2000)]
    # Invented UIDs under the real pod's own name, too.
    strangers += [replace(real, uid=f"forged-{n}") for n in range(100)]
    with caplog.at_level(logging.WARNING, logger="ipam.services.placement_state"):
        for pod in strangers:
            outcome = await rt.placement.filter_names(pod, [NODE])
            assert outcome.passed == [NODE]  # still answered: only the hold is withheld
    assert len(rt.promises) == 0
    assert refused(rt, "unknown_pod") == 2100
    (line,) = [r.getMessage() for r in caplog.records
                if r.name == "ipam.services.placement_state"]  # one line a minute, not 2,100
    assert "filter promise refused for pod ns-0/ghost-0" in line
    assert "the pod watcher has not seen it" in line

    outcome = await rt.placement.filter_names(real, [NODE])
    assert outcome.passed == [NODE] and len(rt.promises) == 1
    (pool,) = rt.catalog.pools
    assert rt.promises.held_by_others(pool.id, "someone-else") == 1


async def test_without_the_check_the_same_flood_starves_the_pool(db: Database) -> None:
    """The control: the same pool and flood with promises granted to anyone (no pod watcher,
    caps out of the way) leaves the real pod nothing - the test above could fail."""
    rt = await build(db, promise_namespace_cap=10_000)
    rt.promises.total_cap = 10_000
    for n in range(SIZE):
        await rt.placement.filter_names(make_pod(f"ghost-{n}"), [NODE])
    outcome = await rt.placement.filter_names(make_pod("real-app"), [NODE])
    assert outcome.passed == [] and outcome.failed[NODE] == "pool 10.90.0.0/24 exhausted"


async def test_a_namespace_holds_at_most_its_cap(db: Database,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    rt = await build(db, promise_namespace_cap=20)
    crowd = [make_pod(f"batch-{n}", namespace="jobs") for n in range(30)]
    other = make_pod("api", namespace="web")
    watcher = await watching(rt, *crowd, other)
    with caplog.at_level(logging.WARNING, logger="ipam.services.placement_state"):
        for pod in crowd:
            assert (await rt.placement.filter_names(pod, [NODE])).passed == [NODE]
    assert rt.promises.in_namespace("jobs") == 20
    assert refused(rt, "namespace_cap") == 10
    (line,) = [r.getMessage() for r in caplog.records
                if r.name == "ipam.services.placement_state"]
    assert "namespace jobs holds 20 promises, the cap (IPAM_PROMISE_NAMESPACE_CAP)" in line
    # A pod re-filtered keeps its own promise: it does not count against itself.
    assert (await rt.placement.filter_names(crowd[0], [NODE])).passed == [NODE]
    assert refused(rt, "namespace_cap") == 10
    # Another namespace is untouched by the crowd.
    assert (await rt.placement.filter_names(other, [NODE])).passed == [NODE]
    assert rt.promises.in_namespace("web") == 1
    # A bound pod gives its slot back (the watcher drops its promise).
    await watcher.on_event("MODIFIED", {
        "metadata": {"name": crowd[0].name, "namespace": "jobs", "uid": crowd[0].uid},
        "spec": {"nodeName": NODE, "containers": []}})
    assert rt.promises.in_namespace("jobs") == 19
    assert (await rt.placement.filter_names(crowd[25], [NODE])).passed == [NODE]
    assert rt.promises.in_namespace("jobs") == 20


async def test_the_total_is_bounded_where_pods_cannot_be_checked(rt: Runtime) -> None:
    """No pod watcher (controllers off): promises are granted unchecked, so a stranger could
    spread over namespaces; the total cap still bounds what they hold."""
    rt.promises.total_cap = 30
    for n in range(40):
        await rt.placement.filter_names(make_pod(f"p-{n}", namespace=f"ns-{n}"), [NODE])
    assert len(rt.promises) == 30 and refused(rt, "total_cap") == 10
    (pool,) = rt.catalog.pools
    assert rt.catalog.free(pool) - rt.promises.held_by_others(pool.id, "real") == SIZE - 30


async def test_visibility_needs_the_same_uid_and_a_pending_pod(rt: Runtime) -> None:
    pending = make_pod("a", namespace="x")
    bound = replace(make_pod("b", namespace="x"), node_name=NODE)
    visible = rt.promises.visible
    assert visible is not None
    assert visible(pending) is None  # no watcher: cannot tell
    await watching(rt, pending, bound)
    assert visible(pending) is True
    assert visible(replace(pending, uid="other")) is False
    assert visible(replace(bound, node_name=None)) is False
    assert visible(make_pod("never-seen", namespace="x")) is False


async def test_bind_reads_the_watcher_s_pod_not_a_stranger_s_filter_body(rt: Runtime) -> None:
    """Filter remembers pods so bind needs no API round trip; a filter body with a real pod's
    name and UID but forged annotations must not decide what bind allocates, and invented
    pods must not crowd real ones out of that memory."""
    real = make_pod("db-0", namespace="shop")
    forged = replace(real, annotations={**real.annotations,
                                        "k8s.v1.cni.galaxy.io/release-policy": "never"})
    ghost = make_pod("ghost", namespace="shop")
    # No watcher yet: the body is all there is.
    await rt.placement.filter_names(forged, [NODE])
    assert rt.placement.recent.get(real.uid) == forged
    await watching(rt, real)
    await rt.placement.filter_names(forged, [NODE])
    await rt.placement.filter_names(ghost, [NODE])
    assert rt.placement.recent.get(real.uid) == real
    assert rt.placement.recent.get(ghost.uid) is None
    assert rt.placement.recent.find("shop", "ghost") is None
