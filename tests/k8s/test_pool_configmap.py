"""A bad pool ConfigMap is refused and reported (log, metric, an Event on the ConfigMap), the
last good pools stay, /readyz stays 200, and the watch moves on to the next version."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.api.test_metrics import samples
from tests.fakeapi.objects import make_configmap
from tests.fakeapi.server import FakeApiServer
from tests.k8s.test_controllers import schedule
from tests.service_harness import RunningService, wait_until

NAME, NS = "floatingip-config", "kube-system"


def entry(ips: list[str], vlan: str = "1200") -> str:
    return ('[{"routableSubnet":"10.10.100.0/24","ips":' + str(ips).replace("'", '"')
            + ',"subnet":"10.11.128.0/21","gateway":"10.11.135.254","vlan":' + vlan + "}]")


GOOD = entry(["10.11.128.1~10.11.128.9"])
FIXED = entry(["10.11.128.1~10.11.128.9", "10.11.130.1~10.11.130.9"])


def ranges(svc: RunningService) -> list[str]:
    return [str(r) for p in svc.runtime.catalog.pools for r in p.ranges]


def refusal_events(fake: FakeApiServer) -> list[dict[str, Any]]:
    return [e for e in fake.list("events", namespace=NS)
            if e["involvedObject"]["name"] == NAME and e["reason"] == "PoolConfigRefused"]


async def publish(fake: FakeApiServer, data: dict[str, str]) -> str:
    if fake.get("configmaps", NAME, namespace=NS) is None:
        obj = fake.create("configmaps", make_configmap(NAME, NS, data))
    else:
        obj = fake.update("configmaps", {**fake.get("configmaps", NAME, namespace=NS),
                                         "data": data})
    return str(obj["metadata"]["resourceVersion"])


@pytest.mark.parametrize(("bad", "fragment"), [
    ({"floatingips": entry(["10.11.128.1~10.11.128.9"], vlan="9" * 5_000)}, "4300 digits"),
    ({"floatingips": entry(["10.11.128.1~10.11.128.9"], vlan="4095")}, "outside 0-4094"),
    ({"floatingips": "[" * 100_000}, ""),
    ({"other-key": GOOD}, "no data key 'floatingips'"),
], ids=["vlan-5000-digits", "vlan-range", "nesting", "missing-key"])
async def test_bad_configmap_is_refused_reported_and_the_watch_moves_on(
    controlled: RunningService, fake_apiserver: FakeApiServer,
    caplog: pytest.LogCaptureFixture, bad: dict[str, str], fragment: str,
) -> None:
    rt: Any = controlled.runtime
    pool_cm = rt.controllers.pool_configmap
    good = await publish(fake_apiserver, {"floatingips": GOOD})
    await wait_until(lambda: pool_cm.applied_version == good)
    assert ranges(controlled) == ["10.11.128.1~10.11.128.9"]

    caplog.set_level(logging.INFO)
    refused = await publish(fake_apiserver, bad)
    await wait_until(lambda: pool_cm.refused_version == refused and refusal_events(fake_apiserver))
    # Refused: the last good pools stay, in the catalog and in PostgreSQL.
    assert ranges(controlled) == ["10.11.128.1~10.11.128.9"]
    assert [str(r) for p in await rt.pools.current() for r in p.ranges] == [
        "10.11.128.1~10.11.128.9"]
    assert fragment in pool_cm.last_error
    # Reported: a log line, an Event on the ConfigMap, a counter.
    assert any(f"resourceVersion {refused}) refused" in r.getMessage()
               for r in caplog.records if r.levelno == logging.ERROR)
    (event,) = refusal_events(fake_apiserver)
    assert event["type"] == "Warning" and event["source"]["component"] == "ipam"
    assert event["involvedObject"]["kind"] == "ConfigMap"
    assert event["involvedObject"]["resourceVersion"] == refused
    assert fragment in event["message"] and len(event["message"]) <= 1024
    metrics = samples((await controlled.client.get("/metrics")).text)
    assert sum(v for (name, _), v in metrics.items()
               if name == "ipam_pool_configmap_refusals_total") == 1
    # Readiness untouched; the refusal is not retried.
    resp = await controlled.client.get("/readyz")
    assert resp.status_code == 200, resp.text
    await pool_cm.sync()
    assert len(refusal_events(fake_apiserver)) == 1

    # The watch moved on: the fixed ConfigMap takes effect, nothing was replayed.
    fixed = await publish(fake_apiserver, {"floatingips": FIXED})
    await wait_until(lambda: pool_cm.applied_version == fixed)
    assert ranges(controlled) == ["10.11.128.1~10.11.128.9", "10.11.130.1~10.11.130.9"]
    assert pool_cm.last_error is None and pool_cm.refused_version is None
    informer = next(i for i in rt.controllers.informers if i.name == "pool-configmap")
    assert informer.stats.restarts == 0 and informer.stats.handler_errors == 0
    assert rt.readiness.conditions["watch:pool-configmap"][0]


async def test_shrink_that_would_strand_an_address_in_use_is_refused_with_an_event(
    controlled: RunningService, fake_apiserver: FakeApiServer,
) -> None:
    from tests.fakeapi.objects import make_pod

    rt: Any = controlled.runtime
    pool_cm = rt.controllers.pool_configmap
    good = await publish(fake_apiserver, {"floatingips": FIXED})
    await wait_until(lambda: pool_cm.applied_version == good)
    address = await schedule(controlled, fake_apiserver.create("pods", make_pod("holder")))
    assert address == "10.11.128.1"
    shrunk = await publish(fake_apiserver, {"floatingips": entry(["10.11.130.1~10.11.130.9"])})
    await wait_until(lambda: pool_cm.refused_version == shrunk and refusal_events(fake_apiserver))
    (event,) = refusal_events(fake_apiserver)
    assert "10.11.128.1" in event["message"] and "in use" in event["message"]
    assert ranges(controlled) == ["10.11.128.1~10.11.128.9", "10.11.130.1~10.11.130.9"]
    assert (await controlled.client.get("/readyz")).status_code == 200


async def test_refusal_survives_a_missing_events_grant(
    controlled: RunningService, fake_apiserver: FakeApiServer,
) -> None:
    """Without RBAC for Events the refusal is still logged and counted; nothing breaks."""
    rt: Any = controlled.runtime
    pool_cm = rt.controllers.pool_configmap
    fake_apiserver.faults.fail_next("POST", r"/namespaces/kube-system/events", 403, count=None,
                                    reason="Forbidden")
    refused = await publish(fake_apiserver, {"floatingips": "not json"})
    await wait_until(lambda: pool_cm.refused_version == refused)
    events = rt.controllers.events
    await wait_until(lambda: events.failed == 1)
    assert refusal_events(fake_apiserver) == []
    assert pool_cm.refusals == {"invalid_config": 1}
    assert (await controlled.client.get("/readyz")).status_code == 200
