"""Reads owners (Deployments, StatefulSets, ReplicaSets) and lists pods for the controllers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ipam.engine.pod import PodFacts, PodShapeError, pod_facts
from ipam.engine.release_decision import WorkloadState
from ipam.engine.release_policy import Owner, OwnerKind
from ipam.errors import Unavailable
from ipam.k8s.client import ApiStatusError, KubeClient

log = logging.getLogger(__name__)

#: Owners we cannot size (Job, DaemonSet, custom controllers) are treated as this large:
#: their kept addresses are trimmed only when the owner is deleted.
UNSIZED = 10**9


class KubeWorkloads:
    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube

    async def workload(self, owner: Owner) -> WorkloadState | None:
        fn: Callable[..., Any]
        if owner.kind is OwnerKind.STATEFULSET:
            fn, name = self.kube.apps.read_namespaced_stateful_set, owner.name
        elif owner.kind is OwnerKind.DEPLOYMENT:
            fn, name = self.kube.apps.read_namespaced_deployment, owner.name
        elif owner.kind is OwnerKind.CONTROLLER and owner.name.startswith("ReplicaSet/"):
            fn, name = self.kube.apps.read_namespaced_replica_set, owner.name.split("/", 1)[1]
        else:
            return WorkloadState(UNSIZED)
        try:
            obj = await self.kube.json(fn, name, owner.namespace)
        except ApiStatusError as exc:
            if exc.status == 404:
                return None
            raise Unavailable(f"reading {owner.key}: {exc}") from exc
        if obj.get("metadata", {}).get("deletionTimestamp"):
            return None
        replicas = obj.get("spec", {}).get("replicas")
        return WorkloadState(int(replicas) if isinstance(replicas, int) else 1)

    async def list_pods(self) -> list[PodFacts]:
        doc: dict[str, Any] = await self.kube.json(self.kube.core.list_pod_for_all_namespaces)
        out = []
        for item in doc.get("items") or []:
            try:
                out.append(pod_facts(item))
            except PodShapeError as exc:
                log.warning("skipping unreadable pod in list: %s", exc)
        return out
