"""API server faults at each step of bind and of the reconciler: no leak, no double release,
and never a bound pod without its reservation."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from sqlalchemy import text

from tests.api.test_extender import bind_body, filter_body, post
from tests.fakeapi.objects import make_pod
from tests.fakeapi.server import FakeApiServer
from tests.k8s.conftest import ServiceFactory
from tests.k8s.test_controllers import Workloads, rows
from tests.service_harness import RunningService, wait_until

BINDING = r"/pods/[^/]+/binding$"
ARGS = "k8s.v1.cni.galaxy.io/args"


def annotated(fake: FakeApiServer, name: str) -> str | None:
    pod = fake.get("pods", name, namespace="default")
    assert pod is not None
    raw = (pod["metadata"].get("annotations") or {}).get(ARGS)
    return str(json.loads(raw)["common"]["ipinfos"][0]["ip"]).split("/")[0] if raw else None


async def test_binding_503_undoes_the_reservation_at_once(
    controlled: RunningService, fake_apiserver: FakeApiServer
) -> None:
    """The API server answered: the Binding was not made, so the address is free for the next
    pod now, not after the reconciler's unbound grace (#13 item 7)."""
    pod = fake_apiserver.create("pods", make_pod("p503"))
    await post(controlled, "filter", filter_body(pod, ["node-0"]))
    fake_apiserver.faults.fail_next("POST", BINDING, 503)
    first = (await post(controlled, "bind", bind_body(pod, "node-0"))).json()
    assert "503" in first["Error"]
    assert await rows(controlled) == {}  # nothing stays reserved
    other = fake_apiserver.create("pods", make_pod("next"))
    assert (await post(controlled, "bind", bind_body(other, "node-0"))).json() == {"Error": ""}
    # The scheduler retries the first pod: it binds, with one address of its own.
    assert (await post(controlled, "bind", bind_body(pod, "node-0"))).json() == {"Error": ""}
    taken = {a: r for a, r in (await rows(controlled)).items() if r[0] == "allocated"}
    assert len(taken) == 2 and annotated(fake_apiserver, "p503") in taken


async def test_binding_that_lands_after_our_timeout_still_has_its_reservation(
    service_factory: ServiceFactory, fake_apiserver: FakeApiServer
) -> None:
    async with service_factory(kube_timeout_seconds=(1.0, 0.5)) as svc:
        pod = fake_apiserver.create("pods", make_pod("slow"))
        fake_apiserver.faults.hang(BINDING, 1.5, method="POST")
        reply = (await post(svc, "bind", bind_body(pod, "node-0"))).json()
        assert reply["Error"]  # we gave up waiting; the API server may or may not apply it
        # Time passing, not synchronisation: the fake API server's hang runs out 1.5 s after
        # the request, and whether the Binding then lands is what the test is about. Nothing
        # tells that a hung (or cancelled) request has finished (tests/fakeapi has no
        # in-flight count), so wait out the hang itself.
        await asyncio.sleep(1.5)
        held = await rows(svc)
        assert list(held.values()) == [("allocated", "pod/default/slow", "slow")]
        address = annotated(fake_apiserver, "slow")
        assert address in (None, *held)  # if it landed, it carries the reserved address
        # The scheduler's retry: success either way, with the same single address.
        assert (await post(svc, "bind", bind_body(pod, "node-0"))).json() == {"Error": ""}
        assert annotated(fake_apiserver, "slow") in held and await rows(svc) == held


async def test_unreadable_pod_at_bind_reserves_nothing(
    controlled: RunningService, fake_apiserver: FakeApiServer
) -> None:
    pod = fake_apiserver.create("pods", make_pod("unread"))
    fake_apiserver.faults.fail_next("GET", r"/pods/unread$", 503)
    reply = (await post(controlled, "bind", bind_body(pod, "node-0"))).json()
    assert "503" in reply["Error"]
    assert await rows(controlled) == {}


async def test_reconciler_with_api_down_changes_nothing(
    controlled: RunningService, fake_apiserver: FakeApiServer
) -> None:
    pod = fake_apiserver.create("pods", make_pod("r1"))
    assert (await post(controlled, "bind", bind_body(pod, "node-0"))).json() == {"Error": ""}
    before = await rows(controlled)
    fake_apiserver.faults.fail_next("GET", r"/api/v1/pods(\?|$)", 503, count=3)
    report = await controlled.runtime.reconciler.run_pass(apply=True)
    assert report.error is not None and "503" in report.error
    assert report.findings == [] and await rows(controlled) == before


async def test_owner_unreadable_on_delete_defers_then_reconciler_decides(
    controlled: RunningService, fake_apiserver: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    w = Workloads(fake_apiserver)
    d = w.deployment("flaky", 1, "immutable")
    pod = w.deployment_pod(d, "aaaaa")
    assert (await post(controlled, "bind", bind_body(pod, "node-0"))).json() == {"Error": ""}
    address = next(iter(await rows(controlled)))
    fake_apiserver.faults.fail_next("GET", r"/deployments/flaky$", 503, count=None)
    caplog.set_level(logging.WARNING, logger="ipam.k8s.pods")
    fake_apiserver.delete("pods", pod["metadata"]["name"], namespace="default")
    # The pod watcher saw the deletion, could not read the owner and said it defers.
    await wait_until(lambda: any(
        r.name == "ipam.k8s.pods" and "deferred to the reconciler" in r.getMessage()
        and pod["metadata"]["name"] in r.getMessage() for r in caplog.records))
    assert (await rows(controlled))[address][0] == "allocated"  # deferred, not guessed
    fake_apiserver.faults.clear()
    report = await controlled.runtime.reconciler.run_pass(apply=True)
    assert [(f.kind, f.action) for f in report.findings] == [("pod_gone", "kept")]
    assert (await rows(controlled))[address][0] == "kept"
    # A second pass (or a second replica's) finds nothing more to do: no double release.
    again = await controlled.runtime.reconciler.run_pass(apply=True)
    assert again.findings == []


async def test_watch_connection_reset_recovers(
    controlled: RunningService, fake_apiserver: FakeApiServer
) -> None:
    pod = fake_apiserver.create("pods", make_pod("reset"))
    assert (await post(controlled, "bind", bind_body(pod, "node-0"))).json() == {"Error": ""}
    controller: Any = controlled.runtime.pod_watcher
    # The informer's lists and watches carry a query (?limit=, ?watch=): match it too.
    resets = fake_apiserver.faults.reset(r"/api/v1/pods(\?|$)", method="GET", count=2)
    fake_apiserver.drop_watches()
    # Both resets hit the re-list/re-watch, and a watch of pods is open again.
    await wait_until(lambda: resets.hits >= 2, timeout=10)
    await asyncio.to_thread(fake_apiserver.wait_for_watchers, "pods", timeout=10)
    fake_apiserver.delete("pods", "reset", namespace="default")
    await wait_until(lambda: controller.released >= 1, timeout=10)
    assert await rows(controlled) == {}
    async with controlled.runtime.db.engine.connect() as conn:
        actions = (await conn.execute(text(
            "SELECT action FROM audit WHERE pod_name = 'reset' ORDER BY id"))).scalars().all()
    assert actions == ["allocate", "release"]
