"""Quarantine on real PostgreSQL: a released address cools down before another owner takes it,
the same owner takes it back at once, and it is free again once the period is over.

Periods are 1-2 s; tests wait for the database's clock to pass a quarantine's end, never for
a fixed time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from ipam.engine.pod import PodFacts
from ipam.engine.pool_config import parse_pool_config
from ipam.engine.release_decision import WorkloadState
from ipam.engine.release_policy import Owner
from ipam.errors import ConfigError, PoolExhausted
from ipam.services.allocation import Actor, Allocator
from ipam.services.placement_state import PoolCatalog
from ipam.services.pod_lifecycle import PodLifecycle
from ipam.services.pool_config import PoolConfigService, pool_usage
from ipam.services.reconciler import Reconciler
from ipam.settings import ReconcilerSettings
from ipam.storage.database import Database
from ipam.storage.records import Holder, PoolRecord
from tests.services.helpers import deployment_pod, make_pod, routable

NODE = "10.10.100.5"
POLICY = "k8s.v1.cni.galaxy.io/release-policy"
ARGS = "k8s.v1.cni.galaxy.io/args"


def entry(ips: str, quarantine: int | None = None, node: str = "10.10.100.0/24",
          subnet: str = "10.20.0.0/24") -> dict[str, Any]:
    out: dict[str, Any] = {"routableSubnet": node, "ips": [ips], "subnet": subnet}
    if quarantine is not None:
        out["quarantineSeconds"] = quarantine
    return out


async def pools(db: Database, *entries: dict[str, Any]) -> list[PoolRecord]:
    service = PoolConfigService(db)
    await service.apply(parse_pool_config(list(entries)), actor=Actor("test"))
    return routable(await service.current(), NODE)


async def rows(db: Database) -> dict[str, tuple[Any, ...]]:
    """address -> (state, owner_key, pod name, quarantined) for every row that is not free."""
    async with db.engine.connect() as conn:
        result = await conn.execute(text(
            "SELECT host(address), state, owner_key, pod_name, quarantined_until IS NOT NULL "
            "FROM addresses WHERE state <> 'free' ORDER BY address"))
        return {r[0]: tuple(r[1:]) for r in result}


async def scalar(db: Database, sql: str, **params: Any) -> Any:
    async with db.engine.connect() as conn:
        return await conn.scalar(text(sql), params)


async def execute(db: Database, sql: str, **params: Any) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(text(sql), params)


async def quarantine_over(db: Database, address: str | None = None, timeout: float = 10.0
                          ) -> None:
    """Wait until the database's clock is past every quarantine's end (or this address's)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while await scalar(db, "SELECT count(*) FROM addresses WHERE state = 'quarantined' "
                           "AND quarantined_until > now() "
                           "AND (CAST(:a AS inet) IS NULL OR address = CAST(:a AS inet))",
                       a=address):
        assert asyncio.get_running_loop().time() < deadline, "quarantine did not end"
        await asyncio.sleep(0.05)


async def gone(allocator: Allocator, pod: PodFacts, replicas: int | None = None
               ) -> list[Any]:
    """The pod's deletion, decided as the pod watcher decides it."""

    class Workloads:
        async def workload(self, owner: Owner) -> WorkloadState | None:
            return WorkloadState(replicas) if replicas is not None else None

    _, changed = await PodLifecycle(allocator, Workloads()).pod_gone(pod.uid, actor=ACTOR)
    return changed


ACTOR = Actor("test", request_id="req-q")


@pytest.fixture
def cooling(db: Database) -> Allocator:
    """An allocator whose default period is long: pools that set their own decide."""
    return Allocator(db, quarantine_seconds=3600)


async def test_released_address_is_quarantined_and_another_owner_gets_a_different_one(
        cooling: Allocator, db: Database) -> None:
    pool = await pools(db, entry("10.20.0.1~10.20.0.9"))
    first = make_pod("a")
    (rec,) = await cooling.allocate(first, pool, node="n", actor=ACTOR)
    (after,) = await gone(cooling, first)
    assert (after.state, after.owner_key, after.pod_uid, after.pod_name) == (
        "quarantined", "pod/default/a", None, "a")
    assert after.quarantined_until is not None
    left = await scalar(db, "SELECT extract(epoch FROM quarantined_until - now()) "
                            "FROM addresses WHERE state = 'quarantined'")
    assert 3500 < left <= 3600
    (other,) = await cooling.allocate(make_pod("b"), pool, node="n", actor=ACTOR)
    assert other.address != rec.address
    async with db.engine.connect() as conn:
        audit = (await conn.execute(text(
            "SELECT action, before->>'state', after->>'state', after ? 'quarantined_until', "
            "pod_name, request_id FROM audit WHERE address = CAST(:a AS inet) ORDER BY id"),
            {"a": str(rec.address)})).all()
    assert [tuple(r) for r in audit] == [
        ("allocate", None, "allocated", False, "a", "req-q"),
        ("quarantine", "allocated", "quarantined", True, "a", "req-q")]


async def test_same_default_policy_pod_name_gets_its_quarantined_address_back_at_once(
        cooling: Allocator, db: Database) -> None:
    pool = await pools(db, entry("10.20.0.1~10.20.0.9"))
    old = make_pod("web-0")
    (rec,) = await cooling.allocate(old, pool, node="n", actor=ACTOR)
    await cooling.allocate(make_pod("bystander"), pool, node="n", actor=ACTOR)
    await gone(cooling, old)
    again = make_pod("web-0")  # re-created: same owner key (its name), another UID
    (got,) = await cooling.allocate(again, pool, node="n", actor=ACTOR)
    assert (got.address, got.state, got.pod_uid) == (rec.address, "allocated", again.uid)
    assert got.quarantined_until is None
    assert await scalar(db, "SELECT action || ':' || (before->>'state') FROM audit "
                            "WHERE pod_uid = :u", u=again.uid) == "reuse:quarantined"


async def test_immutable_statefulset_scaled_down_then_up_gets_the_ordinal_back(
        cooling: Allocator, db: Database) -> None:
    pool = await pools(db, entry("10.20.0.1~10.20.0.9"))
    immutable = {POLICY: "immutable"}
    pods = [make_pod(f"db-{i}", annotations=immutable, owner=("StatefulSet", "db"))
            for i in range(2)]
    got = [(await cooling.allocate(p, pool, node="n", actor=ACTOR))[0] for p in pods]
    (freed,) = await gone(cooling, pods[1], replicas=1)  # scaled down past ordinal 1
    assert (freed.state, freed.owner_key) == ("quarantined", "sts/default/db/1")
    stranger = make_pod("other")
    (theirs,) = await cooling.allocate(stranger, pool, node="n", actor=ACTOR)
    assert theirs.address not in {g.address for g in got}
    back = make_pod("db-1", annotations=immutable, owner=("StatefulSet", "db"))
    (mine,) = await cooling.allocate(back, pool, node="n", actor=ACTOR)
    assert mine.address == got[1].address


async def test_deployment_surplus_is_quarantined_and_the_deployment_takes_it_back(
        cooling: Allocator, db: Database) -> None:
    pool = await pools(db, entry("10.20.0.1~10.20.0.9"))
    pods = [deployment_pod("web", s, policy="immutable") for s in ("aaaaa", "bbbbb")]
    got = [(await cooling.allocate(p, pool, node="n", actor=ACTOR))[0] for p in pods]
    (surplus,) = await gone(cooling, pods[0], replicas=1)
    assert (surplus.state, surplus.owner_key) == ("quarantined", "deploy/default/web")
    async with db.transaction() as store:  # released: the owner holds it no more
        assert await store.addresses.owned_pods("deploy/default/web") == 1
        assert [r.address for r in await store.addresses.by_owner("deploy/default/web")] == [
            got[1].address]
    (other,) = await cooling.allocate(make_pod("x"), pool, node="n", actor=ACTOR)
    assert other.address != got[0].address
    (scaled,) = await cooling.allocate(deployment_pod("web", "ccccc", policy="immutable"),
                                       pool, node="n", actor=ACTOR)
    assert scaled.address == got[0].address


async def test_bare_pod_kept_by_name_gets_its_kept_address_back(
        cooling: Allocator, db: Database) -> None:
    pool = await pools(db, entry("10.20.0.1~10.20.0.9"))
    old = make_pod("solo", annotations={POLICY: "never"})
    (rec,) = await cooling.allocate(old, pool, node="n", actor=ACTOR)
    await cooling.allocate(make_pod("bystander"), pool, node="n", actor=ACTOR)
    (kept,) = await gone(cooling, old)
    assert (kept.state, kept.owner_key) == ("kept", "pod/default/solo")
    (got,) = await cooling.allocate(make_pod("solo", annotations={POLICY: "never"}), pool,
                                    node="n", actor=ACTOR)
    assert got.address == rec.address


async def test_exhausted_pool_waits_for_the_quarantine_then_reuses_the_address(
        db: Database) -> None:
    allocator = Allocator(db, quarantine_seconds=3600)
    pool = await pools(db, entry("10.20.0.1~10.20.0.2", quarantine=1))
    olds = [make_pod(f"o{i}") for i in range(2)]
    taken = {(await allocator.allocate(p, pool, node="n", actor=ACTOR))[0].address
             for p in olds}
    for p in olds:
        await gone(allocator, p)
    assert {s for s, *_ in (await rows(db)).values()} == {"quarantined"}
    newcomer = make_pod("new")
    with pytest.raises(PoolExhausted):
        await allocator.allocate(newcomer, pool, node="n", actor=ACTOR)
    await quarantine_over(db)
    (got,) = await allocator.allocate(newcomer, pool, node="n", actor=ACTOR)
    assert got.address == min(taken)
    # The allocation ended both quarantines (each with its audit row) and took the lowest.
    assert {a: v[0] for a, v in (await rows(db)).items()} == {str(got.address): "allocated"}
    ended = await scalar(db, "SELECT count(*) FROM audit WHERE action = 'release' AND "
                             "actor = 'quarantine' AND reason LIKE 'quarantine over%' "
                             "AND before->>'state' = 'quarantined' AND after->>'state' = 'free'")
    assert ended == 2


async def test_period_zero_frees_at_once_as_before(db: Database) -> None:
    allocator = Allocator(db, quarantine_seconds=3600)
    pool = await pools(db, entry("10.20.0.1~10.20.0.9", quarantine=0))
    pod = make_pod("a")
    (rec,) = await allocator.allocate(pod, pool, node="n", actor=ACTOR)
    (after,) = await gone(allocator, pod)
    assert (after.state, after.owner_key, after.quarantined_until) == ("free", None, None)
    (again,) = await allocator.allocate(make_pod("b"), pool, node="n", actor=ACTOR)
    assert again.address == rec.address
    assert await scalar(db, "SELECT count(*) FROM audit WHERE action = 'release'") == 1
    # And with the service's default at 0 and no period on the pool.
    plain = Allocator(db)
    pool = await pools(db, entry("10.20.0.1~10.20.0.9"))
    (freed,) = await plain.release_pod(
        (await plain.allocate(make_pod("c"), pool, node="n", actor=ACTOR))[0].pod_uid or "",
        keep=False, actor=ACTOR, reason="deleted")
    assert freed.state == "free"


async def test_the_pool_period_overrides_the_default(db: Database) -> None:
    allocator = Allocator(db, quarantine_seconds=0)
    pool = await pools(db, entry("10.20.0.1~10.20.0.9", quarantine=120))
    pod = make_pod("a")
    await allocator.allocate(pod, pool, node="n", actor=ACTOR)
    (after,) = await gone(allocator, pod)
    assert after.state == "quarantined"
    left = await scalar(db, "SELECT extract(epoch FROM quarantined_until - now()) "
                            "FROM addresses WHERE state = 'quarantined'")
    assert 100 < left <= 120
    async with db.transaction() as store:
        (record,) = await store.pools.all()
    assert record.quarantine_seconds == 120


async def test_kept_address_released_counts_from_when_its_pod_left(
        db: Database) -> None:
    allocator = Allocator(db, quarantine_seconds=0)
    pool = await pools(db, entry("10.20.0.1~10.20.0.9", quarantine=1800))
    pods = [deployment_pod("web", s, policy="never") for s in ("aaaaa", "bbbbb")]
    got = [(await allocator.allocate(p, pool, node="n", actor=ACTOR))[0] for p in pods]
    for p in pods:
        await allocator.release_pod(p.uid, keep=True, actor=ACTOR, reason="gone")
    # One was kept an hour ago (longer than the period), the other just now.
    await execute(db, "UPDATE addresses SET kept_since = now() - interval '1 hour' "
                      "WHERE address = CAST(:a AS inet)", a=str(got[0].address))
    for rec in got:
        assert await allocator.release_kept(rec.address, "deploy/default/web", actor=ACTOR,
                                            reason="owner deleted")
    states = await rows(db)
    assert str(got[0].address) not in states
    assert states[str(got[1].address)][0] == "quarantined"
    left = await scalar(db, "SELECT extract(epoch FROM quarantined_until - now()) "
                            "FROM addresses WHERE state = 'quarantined'")
    assert 1700 < left <= 1800


async def test_sweep_frees_what_is_over_and_tells_the_listeners(db: Database) -> None:
    allocator = Allocator(db, quarantine_seconds=3600)
    catalog = PoolCatalog()
    db.listeners.append(catalog.on_change)
    short, long = await pools(db, entry("10.20.0.1~10.20.0.9", quarantine=1),
                              entry("10.30.0.1~10.30.0.9", subnet="10.30.0.0/24"))
    await catalog.refresh(db)
    first, second = make_pod("a"), make_pod("b")
    await allocator.allocate(first, [short], node="n", actor=ACTOR)
    await allocator.allocate(second, [long], node="n", actor=ACTOR)
    for p in (first, second):
        await gone(allocator, p)
    assert catalog.taken == {short.id: 1, long.id: 1}  # quarantined counts as taken
    usage = {u.pool.name: (u.quarantined, u.used, u.free) for u in await pool_usage(db)}
    assert usage == {short.name: (1, 1, 8), long.name: (1, 1, 8)}
    assert await allocator.end_quarantines() == []  # nothing is over yet
    await quarantine_over(db, "10.20.0.1")  # the 1 s one; the 3600 s one still runs
    (ended,) = await allocator.end_quarantines()
    assert (str(ended.address), ended.state) == ("10.20.0.1", "quarantined")
    assert catalog.taken == {short.id: 0, long.id: 1}
    assert {a: v[0] for a, v in (await rows(db)).items()} == {"10.30.0.1": "quarantined"}


async def test_request_ip_range_takes_the_owners_own_and_waits_for_others(
        db: Database) -> None:
    allocator = Allocator(db, quarantine_seconds=3600)
    pool = await pools(db, entry("10.20.0.1~10.20.0.9", quarantine=1))
    one = {ARGS: '{"request_ip_range": [["10.20.0.5"]]}'}
    old = make_pod("r", annotations=one)
    (rec,) = await allocator.allocate(old, pool, node="n", actor=ACTOR)
    await gone(allocator, old)
    with pytest.raises(PoolExhausted, match="no free address in request_ip_range"):
        await allocator.allocate(make_pod("s", annotations=one), pool, node="n", actor=ACTOR)
    (back,) = await allocator.allocate(make_pod("r", annotations=one), pool, node="n",
                                       actor=ACTOR)
    assert back.address == rec.address
    (again,) = await gone(allocator, make_pod("r", uid=back.pod_uid))
    assert again.state == "quarantined"
    await quarantine_over(db)
    (other,) = await allocator.allocate(make_pod("s", annotations=one), pool, node="n",
                                        actor=ACTOR)
    assert other.address == rec.address


async def test_reconciler_reports_quarantine_past_its_end_and_repair_frees_it(
        db: Database) -> None:
    allocator = Allocator(db, quarantine_seconds=3600)
    pool = await pools(db, entry("10.20.0.1~10.20.0.9", quarantine=1))
    pod = make_pod("a")
    await allocator.allocate(pod, pool, node="n", actor=ACTOR)
    await gone(allocator, pod)

    class Cluster:
        async def list_pods(self) -> list[PodFacts]:
            return []

        async def workload(self, owner: Owner) -> WorkloadState | None:
            return None

    cluster = Cluster()
    reconciler = Reconciler(db, allocator, PodLifecycle(allocator, cluster), cluster, cluster,
                            PoolCatalog(), ReconcilerSettings())
    assert (await reconciler.run_pass(apply=False)).findings == []
    await quarantine_over(db)
    check = await reconciler.run_pass(apply=False)
    assert [(f.kind, f.address, f.owner, f.action) for f in check.findings] == [
        ("quarantine_over", "10.20.0.1", "pod/default/a", "none")]
    assert (await rows(db))["10.20.0.1"][0] == "quarantined"  # a check changes nothing
    repair = await reconciler.run_pass(apply=True)
    assert [(f.kind, f.action) for f in repair.findings] == [("quarantine_over", "released")]
    assert await rows(db) == {}
    assert await scalar(db, "SELECT actor FROM audit WHERE action = 'release'") == "reconciler"


async def test_schema_ties_the_end_to_the_state(db: Database) -> None:
    await pools(db, entry("10.20.0.1~10.20.0.9"))
    for state, until in (("quarantined", "NULL"), ("kept", "now()")):
        with pytest.raises(IntegrityError, match="ck_addresses_until_iff_quarantined"):
            async with db.engine.begin() as conn:
                await conn.execute(text(
                    "INSERT INTO addresses (pool_id, address, state, owner_key, "
                    f"quarantined_until) SELECT id, '10.20.0.7', :s, 'pod/x/y', {until} "
                    "FROM pools"), {"s": state})


@pytest.mark.parametrize(("value", "message"), [
    (-1, "outside 0-604800"), (604801, "outside 0-604800"), ("30", 'write 30, not "30"'),
    (True, "whole number"), (1.5, "whole number")])
def test_a_bad_period_names_the_entry_and_field(value: object, message: str) -> None:
    bad = entry("10.20.0.1~10.20.0.9")
    bad["quarantineSeconds"] = value
    with pytest.raises(ConfigError, match=message) as caught:
        parse_pool_config([entry("10.30.0.1", subnet="10.30.0.0/24"), bad])
    assert (caught.value.details["entry"], caught.value.details["field"]) == (
        1, "quarantineSeconds")


def test_the_period_round_trips_through_galaxys_shape() -> None:
    config = parse_pool_config([entry("10.20.0.1~10.20.0.9", quarantine=0),
                                entry("10.30.0.1", subnet="10.30.0.0/24")])
    assert [p.quarantine_seconds for p in config.pools] == [0, None]
    assert config.pools[0].to_galaxy()["quarantineSeconds"] == 0
    assert "quarantineSeconds" not in config.pools[1].to_galaxy()
    again = parse_pool_config([p.to_galaxy() for p in config.pools])
    assert again == config


async def test_config_shrink_drops_a_quarantined_address_instead_of_refusing(
        db: Database) -> None:
    allocator = Allocator(db, quarantine_seconds=3600)
    pool = await pools(db, entry("10.20.0.1~10.20.0.9"))
    pods = [make_pod(n) for n in ("a", "b")]
    for p in pods:
        await allocator.allocate(p, pool, node="n", actor=ACTOR)
    await gone(allocator, pods[0])  # 10.20.0.1 quarantined, 10.20.0.2 allocated
    service = PoolConfigService(db)
    diff = await service.apply(parse_pool_config([entry("10.20.0.2~10.20.0.9")]),
                               actor=Actor("test"))
    assert diff.changed and diff.dropped_free_rows >= 1
    assert {a: v[0] for a, v in (await rows(db)).items()} == {"10.20.0.2": "allocated"}


async def test_a_kept_row_no_pod_ever_held_is_free_at_once(db: Database) -> None:
    """A named pool's pre-allocated address: taken from free, no pod since; nothing to cool."""
    allocator = Allocator(db, quarantine_seconds=3600)
    (pool,) = await pools(db, entry("10.20.0.1~10.20.0.9"))
    async with db.transaction() as store:
        spare = await allocator.take_fresh(store, pool, Holder(
            state="kept", owner_key="pool/gp", policy="never"))
    assert spare is not None
    member = make_pod("m", annotations={"tke.cloud.tencent.com/eni-ip-pool": "gp"})
    (used,) = await allocator.allocate(member, [pool], node="n", actor=ACTOR)
    assert used.address == spare.address  # the pool's kept address, taken by its pod
    await allocator.release_pod(member.uid, keep=True, actor=ACTOR, reason="gone")
    async with db.transaction() as store:
        other = await allocator.take_fresh(store, pool, Holder(
            state="kept", owner_key="pool/gp", policy="never"))
    assert other is not None
    released = await allocator.release_owner("pool/gp", actor=ACTOR, reason="pool deleted")
    assert {(str(r.address), r.state) for r in released} == {
        (str(spare.address), "quarantined"), (str(other.address), "free")}
