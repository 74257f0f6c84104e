"""Finding a pod by name for the operator and CNI paths: the pod watcher's cache, pods seen
at filter, then the API server; and whether the pod holding an address still lives."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from ipam.engine.pod import PodFacts
from ipam.errors import IpamError
from ipam.services.runtime import Runtime
from ipam.storage.records import AddressRecord

log = logging.getLogger(__name__)

#: How long the CNI's "why has this pod no address" may wait for the API server.
POD_LOOKUP_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class PodState:
    """``known``: the answer is definite; then ``pod`` is the pod, or ``None`` if absent."""

    known: bool
    pod: PodFacts | None = None


UNKNOWN = PodState(False)


class PodLookup:
    """Finds a pod by name: the pod cache, pods seen at filter, then the API server."""

    def __init__(self, runtime: Runtime, timeout: float = POD_LOOKUP_SECONDS) -> None:
        self.runtime = runtime
        self.timeout = timeout

    def cached(self, namespace: str, name: str) -> PodState:
        """What the pod watcher knows, without a round trip; definite once it has synced."""
        watcher = self.runtime.pod_watcher
        if watcher is None:
            return UNKNOWN
        found = watcher.lookup(namespace, name)
        synced = self.runtime.readiness.conditions.get("watch:pods", (False, ""))[0]
        return PodState(True, found) if found is not None or synced else UNKNOWN

    def _recent(self, namespace: str, name: str) -> PodFacts | None:
        return self.runtime.placement.recent.find(namespace, name)

    async def find(self, namespace: str, name: str) -> PodState:
        """The pod if any source has it; its absence only as the API server (or, when that
        cannot answer, a synced cache) tells: a watch may lag behind a pod just created."""
        state = self.cached(namespace, name)
        if state.pod is not None:
            return state
        pod = self._recent(namespace, name)
        if pod is not None:
            return PodState(True, pod)
        cluster = self.runtime.placement.cluster
        if cluster is None:
            return state
        try:
            return PodState(True, await asyncio.wait_for(
                cluster.get_pod(namespace, name), self.timeout))
        except (IpamError, TimeoutError) as exc:
            log.info("cannot look pod %s/%s up: %s", namespace, name, exc)
            return state

    async def live(self, row: AddressRecord) -> bool:
        """Whether the pod holding ``row`` may still use it (unknown counts as live)."""
        if row.state != "allocated" or row.pod_namespace is None or row.pod_name is None:
            return False
        state = await self.find(row.pod_namespace, row.pod_name)
        if not state.known:
            return True
        pod = state.pod
        return pod is not None and pod.uid == row.pod_uid and not pod.terminated
