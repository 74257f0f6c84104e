"""Release policies, owners, the reconciler and leadership against the fake API server (over
real HTTP through the official client) and real PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from ipam.services.allocation import Actor
from tests.api.test_extender import bind_body, filter_body, post
from tests.fakeapi.objects import make_deployment, make_pod, make_replicaset, make_statefulset
from tests.fakeapi.server import FakeApiServer
from tests.k8s.conftest import ServiceFactory
from tests.service_harness import RunningService, wait_until

POLICY = "k8s.v1.cni.galaxy.io/release-policy"


async def rows(svc: RunningService) -> dict[str, tuple[str, str | None, str | None]]:
    """address -> (state, owner_key, pod name) for every taken address."""
    async with svc.runtime.db.engine.connect() as conn:
        result = await conn.execute(text(
            "SELECT host(address), state, owner_key, pod_name FROM addresses "
            "WHERE state <> 'free' ORDER BY address"))
        return {r[0]: (r[1], r[2], r[3]) for r in result}


async def schedule(svc: RunningService, pod: dict[str, Any], node: str = "node-0") -> str:
    filtered = (await post(svc, "filter", filter_body(pod, [node]))).json()
    assert filtered["NodeNames"] == [node], filtered
    reply = (await post(svc, "bind", bind_body(pod, node))).json()
    assert reply == {"Error": ""}, reply
    held = await svc.runtime.allocator.pod_addresses(pod["metadata"]["uid"])
    return str(held[0].address)


class Workloads:
    """Deployments and StatefulSets with pods shaped the way their controllers make them."""

    def __init__(self, fake: FakeApiServer) -> None:
        self.fake = fake

    def deployment(self, name: str, replicas: int, policy: str) -> dict[str, Any]:
        dep = self.fake.create("deployments", make_deployment(name, replicas=replicas))
        rs = self.fake.create("replicasets", make_replicaset(
            f"{name}-5d8f7c9b6", replicas=replicas, owner=dep,
            labels={"pod-template-hash": "5d8f7c9b6"}))
        return {"dep": dep, "rs": rs, "policy": policy}

    def deployment_pod(self, d: dict[str, Any], suffix: str) -> dict[str, Any]:
        return self.fake.create("pods", make_pod(
            f"{d['rs']['metadata']['name']}-{suffix}", owner=d["rs"],
            labels={"pod-template-hash": "5d8f7c9b6"}, annotations={POLICY: d["policy"]}))

    def statefulset(self, name: str, replicas: int, policy: str) -> dict[str, Any]:
        return {"sts": self.fake.create("statefulsets", make_statefulset(name, replicas=replicas)),
                "policy": policy}

    def sts_pod(self, s: dict[str, Any], ordinal: int) -> dict[str, Any]:
        return self.fake.create("pods", make_pod(
            f"{s['sts']['metadata']['name']}-{ordinal}", owner=s["sts"],
            annotations={POLICY: s["policy"]}))


async def test_default_policy_frees_on_delete(controlled: RunningService,
                                              fake_apiserver: FakeApiServer) -> None:
    pod = fake_apiserver.create("pods", make_pod("plain"))
    address = await schedule(controlled, pod)
    fake_apiserver.delete("pods", "plain", namespace="default")
    await wait_until(lambda: controlled.runtime.pod_watcher.released >= 1)
    assert address not in await rows(controlled)
    assert (await rows(controlled)) == {}


async def test_never_deployment_keeps_across_pod_and_owner_deletion(
    controlled: RunningService, fake_apiserver: FakeApiServer
) -> None:
    w = Workloads(fake_apiserver)
    d = w.deployment("web", 2, "never")
    first = [await schedule(controlled, w.deployment_pod(d, s)) for s in ("aaaaa", "bbbbb")]
    # A pod dies and its replacement gets the same address.
    fake_apiserver.delete("pods", "web-5d8f7c9b6-aaaaa", namespace="default")
    await wait_until(lambda: controlled.runtime.pod_watcher.released >= 1)
    assert (await rows(controlled))[first[0]][0] == "kept"
    assert await schedule(controlled, w.deployment_pod(d, "ccccc")) == first[0]
    # The whole Deployment is deleted (pods garbage-collected): never keeps both.
    fake_apiserver.delete("deployments", "web", namespace="default")
    await wait_until(lambda: controlled.runtime.pod_watcher.released >= 3)
    kept = await rows(controlled)
    expected = dict.fromkeys(first, ("kept", "deploy/default/web"))
    assert {a: v[:2] for a, v in kept.items()} == expected
    # A Deployment of the same name gets them back.
    d2 = w.deployment("web", 2, "never")
    again = {await schedule(controlled, w.deployment_pod(d2, s)) for s in ("ddddd", "eeeee")}
    assert again == set(first)


async def test_immutable_deployment_deleted_is_released_by_the_reconciler(
    controlled: RunningService, fake_apiserver: FakeApiServer
) -> None:
    w = Workloads(fake_apiserver)
    d = w.deployment("api", 1, "immutable")
    await schedule(controlled, w.deployment_pod(d, "aaaaa"))
    fake_apiserver.delete("deployments", "api", namespace="default")
    await wait_until(lambda: controlled.runtime.pod_watcher.released >= 1)
    assert all(v[0] != "allocated" for v in (await rows(controlled)).values())
    report = await controlled.runtime.reconciler.run_pass(apply=True)
    assert await rows(controlled) == {}
    assert [f.kind for f in report.findings] in ([], ["owner_gone"])


async def test_statefulset_scale_down_releases_exactly_the_removed_ordinals(
    controlled: RunningService, fake_apiserver: FakeApiServer
) -> None:
    w = Workloads(fake_apiserver)
    s = w.statefulset("db", 3, "immutable")
    addresses = [await schedule(controlled, w.sts_pod(s, i)) for i in range(3)]
    fake_apiserver.patch("statefulsets", "db", {"spec": {"replicas": 1}}, namespace="default")
    for i in (2, 1):
        fake_apiserver.delete("pods", f"db-{i}", namespace="default")
    await wait_until(lambda: controlled.runtime.pod_watcher.released >= 2)
    assert set(await rows(controlled)) == {addresses[0]}
    # db-0 restarts (delete + re-create): same address.
    fake_apiserver.delete("pods", "db-0", namespace="default")
    await wait_until(lambda: controlled.runtime.pod_watcher.released >= 3)
    assert await schedule(controlled, w.sts_pod(s, 0)) == addresses[0]


async def test_never_statefulset_keeps_scaled_down_ordinals(
    controlled: RunningService, fake_apiserver: FakeApiServer
) -> None:
    w = Workloads(fake_apiserver)
    s = w.statefulset("kv", 2, "never")
    addresses = [await schedule(controlled, w.sts_pod(s, i)) for i in range(2)]
    fake_apiserver.patch("statefulsets", "kv", {"spec": {"replicas": 1}}, namespace="default")
    fake_apiserver.delete("pods", "kv-1", namespace="default")
    await wait_until(lambda: controlled.runtime.pod_watcher.released >= 1)
    assert (await rows(controlled))[addresses[1]][:2] == ("kept", "sts/default/kv/1")
    fake_apiserver.patch("statefulsets", "kv", {"spec": {"replicas": 2}}, namespace="default")
    assert await schedule(controlled, w.sts_pod(s, 1)) == addresses[1]


async def test_rolling_update_surge_does_not_deadlock_and_shrinks_back(
    controlled: RunningService, fake_apiserver: FakeApiServer
) -> None:
    w = Workloads(fake_apiserver)
    d = w.deployment("roll", 2, "immutable")
    old = [await schedule(controlled, w.deployment_pod(d, s)) for s in ("old01", "old02")]
    # maxSurge 1: a third pod starts before any old one stops; it must get an address.
    surge = await schedule(controlled, w.deployment_pod(d, "new01"))
    assert surge not in old
    fake_apiserver.delete("pods", "roll-5d8f7c9b6-old01", namespace="default")
    await wait_until(lambda: controlled.runtime.pod_watcher.released >= 1)
    # Owner held 3 for 2 replicas: the departing pod's address is freed, not kept.
    assert old[0] not in await rows(controlled)
    second = await schedule(controlled, w.deployment_pod(d, "new02"))
    fake_apiserver.delete("pods", "roll-5d8f7c9b6-old02", namespace="default")
    await wait_until(lambda: controlled.runtime.pod_watcher.released >= 2)
    final = await rows(controlled)
    assert set(final) == {surge, second} and len(final) == 2


async def test_pod_deleted_while_the_service_was_down_is_cleaned_after_restart(
    service_factory: ServiceFactory, fake_apiserver: FakeApiServer
) -> None:
    pod = fake_apiserver.create("pods", make_pod("ghost"))
    async with service_factory() as svc:
        await schedule(svc, pod)
    fake_apiserver.delete("pods", "ghost", namespace="default")
    async with service_factory() as svc:
        await wait_until(lambda: svc.runtime.reconciler.runs >= 1)
        report = svc.runtime.reconciler.last_report
        assert [(f.kind, f.action) for f in report.findings] == [("pod_gone", "released")]
        assert await rows(svc) == {}


async def test_dropped_and_expired_watches_recover(
    controlled: RunningService, fake_apiserver: FakeApiServer
) -> None:
    pods = [fake_apiserver.create("pods", make_pod(f"w{i}")) for i in range(2)]
    for pod in pods:
        await schedule(controlled, pod)
    informer_restarts = controlled.runtime.pod_watcher
    fake_apiserver.drop_watches()
    fake_apiserver.delete("pods", "w0", namespace="default")
    await wait_until(lambda: informer_restarts.released >= 1)
    fake_apiserver.compact()
    fake_apiserver.drop_watches()
    fake_apiserver.delete("pods", "w1", namespace="default")
    await wait_until(lambda: informer_restarts.released >= 2)
    assert await rows(controlled) == {}


async def test_never_bound_reservation_is_freed(
    controlled: RunningService, fake_apiserver: FakeApiServer
) -> None:
    from ipam.engine.pod import pod_facts
    from ipam.settings import ReconcilerSettings

    reconciler = controlled.runtime.reconciler
    pod = fake_apiserver.create("pods", make_pod("stuck"))
    pools = controlled.runtime.catalog.pools
    # As if the process died between reserving and creating the Binding.
    await controlled.runtime.allocator.allocate(pod_facts(pod), pools, node="node-0",
                                                actor=Actor("scheduler"))
    assert (await reconciler.run_pass(apply=True)).findings == []  # within the grace period
    reconciler.settings = ReconcilerSettings(grace_seconds=0, unbound_grace_seconds=0)
    report = await reconciler.run_pass(apply=True)
    assert [(f.kind, f.action) for f in report.findings] == [("never_bound", "released")]
    assert await rows(controlled) == {}


async def test_running_pod_unknown_to_the_database_is_adopted(
    controlled: RunningService, fake_apiserver: FakeApiServer
) -> None:
    args = '{"common":{"ipinfos":[{"ip":"10.11.130.7/21","vlan":1200,"gateway":"10.11.135.254"}]}}'
    fake_apiserver.create("pods", make_pod(
        "legacy", node_name="node-1", phase="Running",
        annotations={"k8s.v1.cni.galaxy.io/args": args}))
    check = await controlled.runtime.reconciler.run_pass(apply=False)
    assert [(f.kind, f.address, f.action) for f in check.findings] == [
        ("unknown_to_database", "10.11.130.7", "none")]
    assert await rows(controlled) == {}
    await controlled.runtime.reconciler.run_pass(apply=True)
    assert await rows(controlled) == {"10.11.130.7": ("allocated", "pod/default/legacy",
                                                      "legacy")}


async def test_kept_address_ttl(controlled: RunningService,
                                fake_apiserver: FakeApiServer) -> None:
    pod = fake_apiserver.create("pods", make_pod("ttl", annotations={
        POLICY: "never", "ipam.fixed-ip.io/kept-ttl-seconds": "3600"}))
    address = await schedule(controlled, pod)
    fake_apiserver.delete("pods", "ttl", namespace="default")
    await wait_until(lambda: controlled.runtime.pod_watcher.released >= 1)
    assert (await rows(controlled))[address][0] == "kept"
    reconciler = controlled.runtime.reconciler
    assert (await reconciler.run_pass(apply=False)).findings == []  # within its TTL
    # The hour passes on the clock the reconciler reads (the database's now() against the
    # row's kept_since): the row is kept an hour and a second earlier instead of waiting.
    async with controlled.runtime.db.engine.begin() as conn:
        moved = await conn.execute(text(
            "UPDATE addresses SET kept_since = kept_since - interval '3601 seconds' "
            "WHERE host(address) = :address AND state = 'kept'"), {"address": address})
        assert moved.rowcount == 1
    report = await reconciler.run_pass(apply=True)
    assert [(f.kind, f.action) for f in report.findings] == [("kept_expired", "released")]
    assert await rows(controlled) == {}


async def test_reconciler_racing_a_new_pod_of_the_same_name(
    service_factory: ServiceFactory, fake_apiserver: FakeApiServer
) -> None:
    # No leader here: the watcher does not release, only our explicit passes act.
    async with service_factory(leader={"enabled": True, "renew_seconds": 3600}) as svc:
        old = fake_apiserver.create("pods", make_pod("same"))
        old_address = await schedule(svc, old)
        fake_apiserver.delete("pods", "same", namespace="default")
        new = fake_apiserver.create("pods", make_pod("same"))
        reconciler = svc.runtime.reconciler
        results = await asyncio.gather(schedule(svc, new), reconciler.run_pass(apply=True))
        new_address = results[0]
        held = await svc.runtime.allocator.pod_addresses(new["metadata"]["uid"])
        assert [str(r.address) for r in held] == [new_address]
        assert await svc.runtime.allocator.pod_addresses(old["metadata"]["uid"]) == []
        await reconciler.run_pass(apply=True)
        taken = await rows(svc)
        assert taken == {new_address: ("allocated", "pod/default/same", "same")}
        assert old_address in (new_address,) or old_address not in taken


async def test_two_replicas_never_both_lead(service_factory: ServiceFactory,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    async with service_factory() as a, service_factory() as b:
        la, lb = a.runtime.leadership, b.runtime.leadership
        await wait_until(lambda: la.is_leader or lb.is_leader)
        leader, follower = (a, b) if la.is_leader else (b, a)
        # Election rounds of both, recorded on their locks: while the leader's every round
        # finds the lock still its own, the follower's every attempt to take it is refused.
        answers: dict[str, list[bool]] = {"held": [], "try_acquire": []}

        def record(lock: Any, method: str) -> None:
            original = getattr(lock, method)

            async def recorded() -> bool:
                result = bool(await original())
                answers[method].append(result)
                return result
            monkeypatch.setattr(lock, method, recorded)

        record(leader.runtime.leadership.lock, "held")
        record(follower.runtime.leadership.lock, "try_acquire")
        await wait_until(lambda: min(len(v) for v in answers.values()) >= 5)
        assert all(answers["held"]) and not any(answers["try_acquire"]), answers
        assert not (la.is_leader and lb.is_leader)
        first_runs = follower.runtime.reconciler.runs
        # The leader goes away; the follower takes over within a few retry periods.
        await leader.runtime.leadership.resign()
        await wait_until(lambda: follower.runtime.leadership.is_leader, timeout=5)
        await wait_until(lambda: follower.runtime.reconciler.runs > first_runs)


async def test_galaxy_pod_without_annotation_is_adopted_by_its_pod_ip(
    controlled: RunningService, fake_apiserver: FakeApiServer
) -> None:
    fake_apiserver.create("pods", make_pod("old-galaxy", node_name="node-0", phase="Running",
                                           pod_ip="10.11.129.40"))
    fake_apiserver.create("pods", make_pod("other-net", node_name="node-0", phase="Running",
                                           pod_ip="172.16.0.9"))
    report = await controlled.runtime.reconciler.run_pass(apply=True)
    assert [(f.kind, f.address, f.action) for f in report.findings] == [
        ("unknown_to_database", "10.11.129.40", "adopted")]
    assert await rows(controlled) == {"10.11.129.40": ("allocated", "pod/default/old-galaxy",
                                                       "old-galaxy")}
