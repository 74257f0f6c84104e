"""The keep-versus-fresh race of a Deployment, closed by PostgreSQL (the owner's advisory lock),
not by timing: a replica releasing the old pod's address (keep, or free as surplus) and another
binding the replacement must never leave the owner holding more than ``replicas`` addresses."""

from __future__ import annotations

import asyncio

from ipam.engine.pool_config import PoolConfig
from ipam.engine.release_decision import WorkloadState, on_pod_gone
from ipam.engine.release_policy import Owner, ReleasePolicy
from ipam.services.allocation import Actor, Allocator
from ipam.services.pool_config import PoolConfigService
from ipam.storage.database import Database
from tests.services.helpers import deployment_pod, routable

REPLICAS = 3
ROUNDS = 25


async def test_release_and_replacement_bind_racing_never_exceed_replicas(
    db_url: str, pool_service: PoolConfigService, seed_config: PoolConfig, actor: Actor,
) -> None:
    await pool_service.apply(seed_config, actor=actor)
    pools = routable(await pool_service.current(), "10.10.100.5")
    # Two engines: the release and the bind come from two replicas, as in a real cluster.
    dbs = [Database(db_url, pool_size=5, max_overflow=0) for _ in range(2)]
    releaser, binder = (Allocator(db) for db in dbs)
    try:
        for n in range(ROUNDS):
            name = f"web{n}"
            pods = [deployment_pod(name, f"p{i:04d}") for i in range(REPLICAS)]
            for pod in pods:
                await binder.allocate(pod, pools, node="n", actor=actor)

            def decide(owner: Owner, policy: str | None, owned: int) -> object:
                return on_pod_gone(ReleasePolicy(policy or "pod-delete"), owner,
                                   WorkloadState(REPLICAS), owned)

            replacement = deployment_pod(name, "new00")
            # Both start together; either order is fine, an interleaving is the bug.
            await asyncio.gather(
                releaser.release_gone_pod(pods[0].uid, decide, actor=actor),  # type: ignore[arg-type]
                binder.allocate(replacement, pools, node="n", actor=actor))
            async with dbs[0].transaction() as store:
                rows = await store.addresses.by_owner(f"deploy/default/{name}")
            assert len(rows) == REPLICAS, (n, [(str(r.address), r.state) for r in rows])
            assert sum(r.state == "kept" for r in rows) == 0, "a kept address nobody takes"
    finally:
        for db in dbs:
            await db.dispose()
