"""Release decisions for every policy, owner kind and owner state."""

from __future__ import annotations

import pytest

from ipam.engine.release_decision import WorkloadState, kept_expired, on_pod_gone
from ipam.engine.release_policy import Owner, OwnerKind, ReleasePolicy

P, IM, N = ReleasePolicy.POD_DELETE, ReleasePolicy.IMMUTABLE, ReleasePolicy.NEVER
STS = Owner(OwnerKind.STATEFULSET, "ns", "db", 2)
DEPLOY = Owner(OwnerKind.DEPLOYMENT, "ns", "web")


@pytest.mark.parametrize(
    ("policy", "owner", "workload", "owned", "keep"),
    [
        (P, Owner(OwnerKind.POD, "ns", "p"), None, 1, False),
        (P, Owner(OwnerKind.POOL, "", "shared"), None, 1, True),
        (N, Owner(OwnerKind.POD, "ns", "p"), None, 1, True),
        (IM, STS, WorkloadState(3), 3, True),
        (IM, STS, WorkloadState(2), 3, False),  # ordinal 2 >= replicas 2: scaled down
        (N, STS, WorkloadState(2), 3, True),
        (IM, STS, None, 3, False),
        (N, STS, None, 3, True),
        (IM, DEPLOY, WorkloadState(3), 3, True),
        (IM, DEPLOY, WorkloadState(3), 4, False),  # surge surplus
        (N, DEPLOY, WorkloadState(3), 4, False),
        (N, DEPLOY, WorkloadState(3), 2, True),
        (IM, DEPLOY, None, 3, False),
        (N, DEPLOY, None, 3, True),
        (N, DEPLOY, WorkloadState(0), 3, True),  # scaled to 0: never keeps them all
        (N, DEPLOY, WorkloadState(0), 1, True),
        (IM, DEPLOY, WorkloadState(0), 1, False),
    ],
)
def test_on_pod_gone(policy: ReleasePolicy, owner: Owner, workload: WorkloadState | None,
                     owned: int, keep: bool) -> None:
    decision = on_pod_gone(policy, owner, workload, owned)
    assert decision.keep is keep
    assert decision.reason


def test_kept_ttl() -> None:
    assert kept_expired(60, 61.0) and not kept_expired(60, 59.0) and not kept_expired(None, 1e9)
