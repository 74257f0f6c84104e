"""The base of the operator and CNI use cases: the runtime they work on, and how they find
pods the service did not see itself (``PodLookup``). A transport builds one per request."""

from __future__ import annotations

from collections.abc import Sequence

from ipam.engine.ip_ranges import IPAddress
from ipam.services.pod_lookup import PodLookup
from ipam.services.runtime import Runtime
from ipam.storage.records import PoolRecord


class RuntimeUseCase:
    """One per request: cheap to build, holds no state of its own."""

    def __init__(self, runtime: Runtime, pods: PodLookup | None = None) -> None:
        self.runtime = runtime
        self.db = runtime.db
        self.pods = pods or PodLookup(runtime)


def pool_of(pools: Sequence[PoolRecord], address: IPAddress) -> PoolRecord | None:
    return next((p for p in pools if any(address in r for r in p.ranges)), None)
