"""What to do when a pod is gone: ask its owner's state, then free or keep its addresses.

Called from the pod watcher (DELETED events, on the leader) and from the reconciler (pods
that vanished while nobody watched). The decision rules are ``engine.release_decision``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Protocol

from ipam.engine.release_decision import Decision, WorkloadState, on_pod_gone
from ipam.engine.release_policy import Owner, OwnerKind, ReleasePolicy, owner_from_key
from ipam.services.allocation import Actor, Allocator
from ipam.storage.records import AddressRecord

log = logging.getLogger(__name__)


class WorkloadReader(Protocol):
    async def workload(self, owner: Owner) -> WorkloadState | None:
        """The owner's desired size, ``None`` when it no longer exists.

        Raises ``Unavailable`` when the API server cannot tell; callers then keep the
        address and let the next reconciler pass decide.
        """


def _policy(value: str | None) -> ReleasePolicy:
    try:
        return ReleasePolicy(value) if value else ReleasePolicy.POD_DELETE
    except ValueError:
        return ReleasePolicy.POD_DELETE


class PodLifecycle:
    def __init__(self, allocator: Allocator, workloads: WorkloadReader) -> None:
        self.allocator = allocator
        self.workloads = workloads

    async def pod_gone(self, uid: str, *, actor: Actor, stale_before: datetime | None = None
                       ) -> tuple[Decision | None, list[AddressRecord]]:
        """Free or keep the addresses of the pod with this UID (no-op if it holds none)."""
        rows = await self.allocator.pod_addresses(uid)
        if not rows:
            return None, []
        owner = owner_from_key(rows[0].owner_key or "")
        workload: WorkloadState | None = None
        if _policy(rows[0].policy).keeps and owner.kind in (
                OwnerKind.STATEFULSET, OwnerKind.DEPLOYMENT, OwnerKind.CONTROLLER):
            workload = await self.workloads.workload(owner)

        def decide(owner: Owner, policy: str | None, owned: int) -> Decision:
            return on_pod_gone(_policy(policy), owner, workload, owned)

        return await self.allocator.release_gone_pod(uid, decide, actor=actor,
                                                     stale_before=stale_before)
