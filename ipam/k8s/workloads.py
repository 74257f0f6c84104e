"""Reads owners (Deployments, StatefulSets, ReplicaSets) and lists pods for the controllers."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from ipam.engine.pod import PodFacts, PodShapeError, pod_facts
from ipam.engine.release_decision import WorkloadState
from ipam.engine.release_policy import Owner, OwnerKind
from ipam.errors import Unavailable
from ipam.k8s.client import ApiStatusError, KubeClient
from ipam.k8s.informer import list_pages

log = logging.getLogger(__name__)

#: Owners we cannot size (Job, DaemonSet, custom controllers) are treated as this large:
#: their kept addresses are trimmed only when the owner is deleted.
UNSIZED = 10**9


class KubeWorkloads:
    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube

    async def workload(self, owner: Owner) -> WorkloadState | None:
        if owner.kind is OwnerKind.STATEFULSET:
            plural, name = "statefulsets", owner.name
        elif owner.kind is OwnerKind.DEPLOYMENT:
            plural, name = "deployments", owner.name
        elif owner.kind is OwnerKind.CONTROLLER and owner.name.startswith("ReplicaSet/"):
            plural, name = "replicasets", owner.name.split("/", 1)[1]
        else:
            return WorkloadState(UNSIZED)
        path = (f"/apis/apps/v1/namespaces/{quote(owner.namespace, safe='')}/{plural}/"
                f"{quote(name, safe='')}")
        try:
            obj = await self.kube.get(path)
        except ApiStatusError as exc:
            if exc.status == 404:
                return None
            raise Unavailable(f"reading {owner.key}: {exc}") from exc
        if obj.get("metadata", {}).get("deletionTimestamp"):
            return None
        replicas = obj.get("spec", {}).get("replicas")
        return WorkloadState(int(replicas) if isinstance(replicas, int) else 1)

    async def list_pods(self) -> list[PodFacts]:
        """Every pod's facts: the reconciler's own list, taken after its database snapshot,
        page by page (``list_pages``), so a large cluster's list is never parsed whole."""
        pods, _ = await list_pages(self.kube, "/api/v1/pods", _readable_pod)
        return pods


def _readable_pod(obj: dict[str, Any]) -> PodFacts | None:
    try:
        return pod_facts(obj)
    except PodShapeError as exc:
        log.warning("skipping unreadable pod in list: %s", exc)
        return None
