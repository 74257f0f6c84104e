"""What happens to a pod's address when the pod is gone: free it, or keep it for its owner.

Pure rules over facts the caller gathers (the owner's current size, or that it is gone):

* default policy: free.
* named pool: keep (the pool owns its addresses).
* StatefulSet ordinal: keep while ``ordinal < replicas``; past it (scaled down) ``immutable``
  frees and ``never`` keeps (scaling back up returns the same address); owner deleted:
  ``immutable`` frees, ``never`` keeps.
* Deployment (and other controllers): keep while the owner holds no more addresses than it has
  replicas; a surplus (the surge of a rolling update, or a scale-down) is freed as old pods go,
  so the kept set grows by at most ``maxSurge`` and shrinks back to ``replicas``. Scaled to 0
  or deleted: ``immutable`` frees, ``never`` keeps (scaling back up, or a same-named owner,
  gets the addresses again).
* Bare pod with ``never``/``immutable``: keep by name (a re-created pod of that name gets it).
"""

from __future__ import annotations

from dataclasses import dataclass

from ipam.engine.release_policy import Owner, OwnerKind, ReleasePolicy


@dataclass(frozen=True, slots=True)
class WorkloadState:
    """The owner as the API server has it now; ``None`` in place of it means deleted."""

    replicas: int


@dataclass(frozen=True, slots=True)
class Decision:
    keep: bool
    reason: str


def on_pod_gone(policy: ReleasePolicy, owner: Owner, workload: WorkloadState | None,
                owned: int) -> Decision:
    """``owned``: addresses the owner holds now, this pod's included."""
    if owner.kind is OwnerKind.POOL:
        return Decision(True, f"kept for pool {owner.name}")
    if not policy.keeps:
        return Decision(False, "pod deleted (release policy: on pod delete)")
    if owner.kind is OwnerKind.POD:
        return Decision(True, f"kept for pod name {owner.namespace}/{owner.name} "
                              f"(policy {policy.value})")
    if workload is None:
        if policy is ReleasePolicy.NEVER:
            return Decision(True, f"{owner.key} deleted; kept (policy never)")
        return Decision(False, f"{owner.key} deleted (policy immutable)")
    if owner.kind is OwnerKind.STATEFULSET:
        assert owner.ordinal is not None
        if owner.ordinal < workload.replicas:
            return Decision(True, f"kept for {owner.key} (replicas {workload.replicas})")
        if policy is ReleasePolicy.NEVER:
            return Decision(True, f"{owner.key} scaled down to {workload.replicas}; "
                                  "kept (policy never)")
        return Decision(False, f"{owner.key} scaled down to {workload.replicas} "
                               "(policy immutable)")
    if workload.replicas == 0 and policy is ReleasePolicy.NEVER:
        return Decision(True, f"{owner.key} scaled to 0; kept (policy never)")
    if owned > workload.replicas:
        return Decision(False, f"{owner.key} holds {owned} addresses for "
                               f"{workload.replicas} replicas; surplus freed")
    return Decision(True, f"kept for {owner.key} ({owned}/{workload.replicas})")


def kept_expired(ttl_seconds: int | None, idle_seconds: float) -> bool:
    """galaxy issue #87: a kept address unused for longer than its TTL is freed."""
    return ttl_seconds is not None and idle_seconds >= ttl_seconds
