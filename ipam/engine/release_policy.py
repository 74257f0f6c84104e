"""galaxy's release policies and who owns an address while no pod holds it.

* ``POD_DELETE`` (no annotation, or any unknown value, as galaxy): free on pod delete.
* ``IMMUTABLE``: keep across pod re-creation; free on scale-down past the pod or owner delete.
* ``NEVER``: keep even after the owner is deleted; a same-named owner gets it back.
A named pool (``eni-ip-pool``) keeps its addresses whatever the policy says.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from ipam.engine.pod import (
    KEPT_TTL_ANNOTATION,
    POOL_ANNOTATION,
    RELEASE_POLICY_ANNOTATION,
    PodFacts,
)


class ReleasePolicy(enum.StrEnum):
    POD_DELETE = "pod-delete"
    IMMUTABLE = "immutable"
    NEVER = "never"

    @classmethod
    def of(cls, pod: PodFacts) -> ReleasePolicy:
        value = pod.annotations.get(RELEASE_POLICY_ANNOTATION, "")
        if value == "never":
            return cls.NEVER
        if value == "immutable":
            return cls.IMMUTABLE
        return cls.POD_DELETE

    @property
    def keeps(self) -> bool:
        return self is not ReleasePolicy.POD_DELETE


class OwnerKind(enum.StrEnum):
    POD = "pod"
    STATEFULSET = "sts"
    DEPLOYMENT = "deploy"
    POOL = "pool"
    #: Other controllers (bare ReplicaSet, Job, DaemonSet...): kept per controller object.
    CONTROLLER = "ctrl"


@dataclass(frozen=True, slots=True)
class Owner:
    """Who an address belongs to. ``key`` is stored and indexed; the rest derives from it."""

    kind: OwnerKind
    namespace: str
    name: str
    #: StatefulSet ordinal; ``None`` for other kinds.
    ordinal: int | None = None

    @property
    def key(self) -> str:
        if self.kind is OwnerKind.POOL:
            return f"pool/{self.name}"
        if self.kind is OwnerKind.STATEFULSET:
            return f"sts/{self.namespace}/{self.name}/{self.ordinal}"
        return f"{self.kind.value}/{self.namespace}/{self.name}"

    @property
    def workload_key(self) -> str:
        """Key shared by every pod of the workload (all ordinals of a StatefulSet)."""
        if self.kind is OwnerKind.STATEFULSET:
            return f"sts/{self.namespace}/{self.name}/"
        return self.key

    @property
    def keeps_per_pod(self) -> bool:
        """A StatefulSet ordinal or a bare pod maps to exactly one pod at a time."""
        return self.kind in (OwnerKind.STATEFULSET, OwnerKind.POD)


_ORDINAL = re.compile(r"^(?P<set>.+)-(?P<ordinal>\d+)$")


def owner_of(pod: PodFacts) -> Owner:
    """The owner whose addresses this pod may reuse.

    Derived from the pod alone (ownerReferences and the pod-template-hash label), so it still
    works when the ReplicaSet or Deployment is already gone.
    """
    pool = pod.annotations.get(POOL_ANNOTATION)
    if pool:
        return Owner(OwnerKind.POOL, "", pool)
    ref = pod.controller
    if ReleasePolicy.of(pod).keeps and ref is not None:
        if ref.kind == "StatefulSet":
            match = _ORDINAL.match(pod.name)
            if match and match.group("set") == ref.name:
                return Owner(OwnerKind.STATEFULSET, pod.namespace, ref.name,
                             int(match.group("ordinal")))
        if ref.kind == "ReplicaSet":
            template_hash = pod.labels.get("pod-template-hash")
            if template_hash and ref.name.endswith(f"-{template_hash}"):
                deployment = ref.name[: -len(template_hash) - 1]
                return Owner(OwnerKind.DEPLOYMENT, pod.namespace, deployment)
        return Owner(OwnerKind.CONTROLLER, pod.namespace, f"{ref.kind}/{ref.name}")
    return Owner(OwnerKind.POD, pod.namespace, pod.name)


def kept_ttl_seconds(pod: PodFacts) -> int | None:
    """The optional time-to-live for a kept address; bad values are ignored, not fatal."""
    raw = pod.annotations.get(KEPT_TTL_ANNOTATION)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value > 0 else None


def owner_from_key(key: str) -> Owner:
    """Parse a stored ``owner_key`` back (the inverse of ``Owner.key``).

    Unknown shapes come back as a bare-pod owner named after the key, which keeps addresses
    conservatively rather than guessing a workload.
    """
    kind, _, rest = key.partition("/")
    parts = rest.split("/")
    if kind == OwnerKind.POOL.value:
        return Owner(OwnerKind.POOL, "", rest)
    if kind == OwnerKind.STATEFULSET.value and len(parts) == 3 and parts[2].isdigit():
        return Owner(OwnerKind.STATEFULSET, parts[0], parts[1], int(parts[2]))
    if kind == OwnerKind.DEPLOYMENT.value and len(parts) == 2:
        return Owner(OwnerKind.DEPLOYMENT, parts[0], parts[1])
    if kind == OwnerKind.CONTROLLER.value and len(parts) == 3:
        return Owner(OwnerKind.CONTROLLER, parts[0], f"{parts[1]}/{parts[2]}")
    if kind == OwnerKind.POD.value and len(parts) == 2:
        return Owner(OwnerKind.POD, parts[0], parts[1])
    return Owner(OwnerKind.POD, "", key)
