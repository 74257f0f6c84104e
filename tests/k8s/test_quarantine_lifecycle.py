"""Quarantine end to end: pods deleted in the fake API server, the service's pod watcher
releasing, the extender placing the next pods, the leader's sweep ending quarantines; seen
through the REST API, the CLI and /metrics.

Periods are 1 s or an hour (set per pool); the sweep runs every catalog refresh (0.5 s
here). Tests wait on conditions, never for a period to pass.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_extender import bind_body, filter_body, post
from tests.cli.conftest import client_env, invoke
from tests.fakeapi.objects import make_pod
from tests.fakeapi.server import FakeApiServer
from tests.k8s.conftest import ServiceFactory
from tests.k8s.test_controllers import Workloads, rows, schedule
from tests.service_harness import RunningService, wait_until

HOUR = 3600


def pools_file(tmp_path: Path, period: int | None, ips: str = "10.11.128.1~10.11.128.10"
               ) -> Path:
    entry: dict[str, Any] = {"routableSubnet": "10.10.100.0/24", "ips": [ips],
                             "subnet": "10.11.128.0/24", "gateway": "10.11.128.254"}
    if period is not None:
        entry["quarantineSeconds"] = period
    path = tmp_path / f"pools-{period}-{ips.replace('~', '_')}.json"
    path.write_text(json.dumps([entry]))
    return path


Start = Callable[..., AbstractAsyncContextManager[RunningService]]


@pytest.fixture
def start(service_factory: ServiceFactory, tmp_path: Path) -> Start:
    """A leader with one pool of the given period (and the service's default at an hour)."""

    @asynccontextmanager
    async def started(period: int | None, **more: Any) -> AsyncIterator[RunningService]:
        async with service_factory(pools_file=pools_file(tmp_path, period, **more),
                                   quarantine_seconds=HOUR) as svc:
            await wait_until(lambda: svc.runtime.leadership.is_leader)
            yield svc

    return started


def released(svc: RunningService, n: int) -> Callable[[], bool]:
    return lambda: svc.runtime.pod_watcher.released >= n


async def address(svc: RunningService, ip: str) -> dict[str, Any]:
    reply = await svc.client.get(f"/v1/addresses/{ip}")
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def test_deleted_pod_quarantines_its_address_for_others_not_for_its_name(
        start: Start, fake_apiserver: FakeApiServer) -> None:
    async with start(HOUR) as svc:
        first = await schedule(svc, fake_apiserver.create("pods", make_pod("web-0")))
        fake_apiserver.delete("pods", "web-0", namespace="default")
        await wait_until(released(svc, 1))
        view = await address(svc, first)
        assert (view["state"], view["owner"], view["pod_name"], view["pod_uid"]) == (
            "quarantined", "pod/default/web-0", "web-0", None)
        assert view["quarantined_until"] is not None
        # Another pod: a different address while the quarantine lasts.
        other = await schedule(svc, fake_apiserver.create("pods", make_pod("api-0")))
        assert other != first
        # The same name again (a re-created pod): its own address, at once.
        again = fake_apiserver.create("pods", make_pod("web-0"))
        assert await schedule(svc, again) == first
        assert (await address(svc, first))["pod_uid"] == again["metadata"]["uid"]
        history = (await svc.client.get("/v1/audit", params={"address": first})).json()
        assert [i["action"] for i in history["items"]][:3] == ["reuse", "quarantine",
                                                               "allocate"]


async def test_after_the_quarantine_the_address_is_free_and_reused(
        start: Start, fake_apiserver: FakeApiServer) -> None:
    async with start(1) as svc:
        first = await schedule(svc, fake_apiserver.create("pods", make_pod("a")))
        fake_apiserver.delete("pods", "a", namespace="default")
        await wait_until(released(svc, 1))
        assert (await rows(svc))[first][0] == "quarantined"
        # The leader's sweep ends it (no pool pressure needed), with its audit row.
        await wait_until(lambda: svc.runtime.catalog.taken.get(
            svc.runtime.catalog.pools[0].id, 0) == 0, timeout=15)
        assert (await address(svc, first))["state"] == "free"
        history = (await svc.client.get("/v1/audit", params={"address": first})).json()
        latest = history["items"][0]
        assert (latest["action"], latest["actor"]) == ("release", "quarantine")
        assert latest["reason"].startswith("quarantine over")
        # Lowest first again: the next pod of any owner gets it.
        assert await schedule(svc, fake_apiserver.create("pods", make_pod("b"))) == first


async def test_period_zero_behaves_as_without_quarantine(
        start: Start, fake_apiserver: FakeApiServer) -> None:
    async with start(0) as svc:
        first = await schedule(svc, fake_apiserver.create("pods", make_pod("a")))
        fake_apiserver.delete("pods", "a", namespace="default")
        await wait_until(released(svc, 1))
        assert await rows(svc) == {}
        assert await schedule(svc, fake_apiserver.create("pods", make_pod("b"))) == first
        actions = [i["action"] for i in (await svc.client.get(
            "/v1/audit", params={"address": first})).json()["items"]]
        assert actions == ["allocate", "release", "allocate"]


async def test_full_pool_filter_passes_only_the_owner_back(
        start: Start, fake_apiserver: FakeApiServer) -> None:
    async with start(HOUR, ips="10.11.128.1~10.11.128.2") as svc:
        w = Workloads(fake_apiserver)
        s = w.statefulset("db", 2, "immutable")
        held = [await schedule(svc, w.sts_pod(s, i)) for i in range(2)]
        fake_apiserver.patch("statefulsets", "db", {"spec": {"replicas": 0}},
                             namespace="default")
        for i in range(2):
            fake_apiserver.delete("pods", f"db-{i}", namespace="default")
        await wait_until(released(svc, 2))
        assert {v[0] for v in (await rows(svc)).values()} == {"quarantined"}
        stranger = fake_apiserver.create("pods", make_pod("stranger"))
        reply = (await post(svc, "filter", filter_body(stranger, ["node-0"]))).json()
        assert reply["NodeNames"] == [] and "exhausted" in reply["FailedNodes"]["node-0"]
        fake_apiserver.patch("statefulsets", "db", {"spec": {"replicas": 2}},
                             namespace="default")
        assert [await schedule(svc, w.sts_pod(s, i)) for i in (1, 0)] == held[::-1]
        metrics = (await svc.client.get("/metrics")).text
        assert 'ipam_address_changes_total{action="reuse",pool="10.11.128.0/24"} 2.0' \
            in metrics
        assert 'ipam_pool_addresses{pool="10.11.128.0/24",state="allocated",vlan="0"} 2.0' \
            in metrics


async def test_refused_binding_of_a_reclaimed_address_leaves_it_quarantined(
        start: Start, fake_apiserver: FakeApiServer) -> None:
    async with start(HOUR) as svc:
        first = await schedule(svc, fake_apiserver.create("pods", make_pod("a")))
        fake_apiserver.delete("pods", "a", namespace="default")
        await wait_until(released(svc, 1))
        until = (await address(svc, first))["quarantined_until"]
        again = fake_apiserver.create("pods", make_pod("a"))
        fake_apiserver.faults.fail_next("POST", r"/pods/a/binding$", status=409,
                                        reason="Conflict", message="injected")
        reply = (await post(svc, "bind", bind_body(again, "node-0"))).json()
        assert "injected" in reply["Error"]
        view = await address(svc, first)
        assert (view["state"], view["owner"], view["pod_uid"]) == (
            "quarantined", "pod/default/a", None)
        assert view["quarantined_until"] >= until
        assert await schedule(svc, again) == first


async def test_quarantined_state_in_the_listing_the_cli_metrics_and_pools(
        start: Start, fake_apiserver: FakeApiServer) -> None:
    async with start(HOUR) as svc:
        gone = [await schedule(svc, fake_apiserver.create("pods", make_pod(n)))
                for n in ("a", "b")]
        await schedule(svc, fake_apiserver.create("pods", make_pod("c")))
        for n in ("a", "b"):
            fake_apiserver.delete("pods", n, namespace="default")
        await wait_until(released(svc, 2))
        listing = (await svc.client.get("/v1/addresses",
                                        params={"state": "quarantined"})).json()
        assert [i["address"] for i in listing["items"]] == gone
        bad = await svc.client.get("/v1/addresses", params={"state": "cooling"})
        assert bad.status_code == 422
        run = await invoke(client_env(svc.url, None), "ips", "list", "--state", "quarantined",
                           "-o", "json")
        assert run.code == 0, run
        assert [i["address"] for i in json.loads(run.stdout)["items"]] == gone
        (pool,) = (await svc.client.get("/v1/pools")).json()["items"]
        assert (pool["quarantined"], pool["allocated"], pool["used"], pool["free"],
                pool["quarantine_seconds"]) == (2, 1, 3, 7, HOUR)
        metrics = (await svc.client.get("/metrics")).text
        assert 'ipam_pool_addresses{pool="10.11.128.0/24",state="quarantined",vlan="0"} 2.0' \
            in metrics
        assert 'ipam_address_changes_total{action="quarantine",pool="10.11.128.0/24"} 2.0' \
            in metrics
        # An operator's release of a quarantined address ends the quarantine now.
        ended = await svc.client.post(f"/v1/addresses/{gone[0]}/release", json={})
        assert ended.status_code == 200, ended.text
        assert [r["state"] for r in ended.json()["released"]] == ["free"]
        assert (await address(svc, gone[0]))["state"] == "free"
