"""The pod watcher: keeps the extender's caches current and, on the leader, releases addresses
of deleted and terminated (Failed/Succeeded) pods by their release policy (the reconciler
catches whatever it misses, also what changed while the service was down)."""

from __future__ import annotations

import logging
from typing import Any

from ipam.engine.pod import PodFacts, PodShapeError, pod_facts
from ipam.errors import IpamError
from ipam.services.allocation import Actor
from ipam.services.leadership import Leadership
from ipam.services.placement import PodNotices
from ipam.services.placement_state import Promises, RecentPods
from ipam.services.pod_lifecycle import PodLifecycle

log = logging.getLogger(__name__)
ACTOR = Actor("pod-watcher")


class PodController:
    def __init__(self, promises: Promises, recent: RecentPods, lifecycle: PodLifecycle,
                 leadership: Leadership | None, notices: PodNotices | None = None) -> None:
        self.promises = promises
        self.recent = recent
        self.lifecycle = lifecycle
        self.leadership = leadership
        self.pods: dict[str, PodFacts] = {}
        self.released = 0
        self.notices = notices

    def lookup(self, namespace: str, name: str) -> PodFacts | None:
        return self.pods.get(f"{namespace}/{name}")

    @staticmethod
    def reduce(obj: dict[str, Any]) -> PodFacts | None:
        """A listed pod as the caches keep it; ``None`` for one we cannot read."""
        try:
            return pod_facts(obj)
        except PodShapeError:
            return None

    async def on_sync(self, listed: list[PodFacts]) -> None:
        pods: dict[str, PodFacts] = {}
        for pod in listed:
            pods[pod.key] = pod
            if pod.node_name is not None:
                self.promises.drop(pod.uid)
        previous, self.pods = self.pods, pods
        # A re-list after 410 Gone: pods deleted while the watch was down never come as
        # DELETED events (TRAPS.md, tombstones); the diff with the last cache finds them.
        listed_uids = {pod.uid for pod in listed}
        for pod in previous.values():
            if pod.uid not in listed_uids:
                self.promises.drop(pod.uid)
                self.recent.forget(pod.uid)
                await self._released(pod)

    async def on_event(self, etype: str, obj: dict[str, Any]) -> None:
        try:
            pod = pod_facts(obj)
        except PodShapeError:
            return
        if etype == "DELETED":
            current = self.pods.get(pod.key)
            if current is not None and current.uid == pod.uid:
                del self.pods[pod.key]
            self.promises.drop(pod.uid)
            self.recent.forget(pod.uid)
            await self._released(pod)
            return
        before = self.pods.get(pod.key)
        self.pods[pod.key] = pod
        if pod.node_name is not None:
            self.promises.drop(pod.uid)
        if pod.terminated and (before is None or before.uid != pod.uid or not before.terminated):
            # Failed or Succeeded: galaxy releases by policy as for a deleted pod (the pod
            # object may stay for a long time; its containers will not run again).
            await self._released(pod, f"{(pod.phase or '').lower()} (terminated)")

    async def _released(self, pod: PodFacts, why: str = "deleted") -> None:
        if not pod.managed:
            return
        if self.leadership is not None and not await self.leadership.confirm():
            return
        try:
            decision, rows = await self.lifecycle.pod_gone(pod.uid, actor=ACTOR)
        except IpamError as exc:
            log.warning("release for %s pod %s deferred to the reconciler: %s",
                        why, pod.key, exc.message)
            return
        if decision is not None:
            self.released += 1
            addresses = ", ".join(str(r.address) for r in rows)
            log.info("pod %s %s: %s %s", pod.key, why, "kept" if decision.keep else "freed",
                     addresses)
            if self.notices is not None:
                self.notices.notice(
                    pod, reason="AddressKept" if decision.keep else "AddressReleased",
                    message=f"{addresses}: {decision.reason}", warning=False)
