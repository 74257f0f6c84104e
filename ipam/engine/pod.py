"""What the allocator needs to know about a pod, read from its Kubernetes JSON.

The extender receives pods as raw JSON and the watchers see the same shape, so both build a
``PodFacts`` here and nothing else parses pod JSON. Annotation and resource names are galaxy's,
so manifests written for galaxy keep working.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Extended resource that marks a pod as ours (galaxy's rule and the scheduler's gate).
ENI_IP_RESOURCE = "tke.cloud.tencent.com/eni-ip"
#: Multus-style network selection; galaxy's seed uses the value "galaxy-k8s-vlan".
NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"
RELEASE_POLICY_ANNOTATION = "k8s.v1.cni.galaxy.io/release-policy"
#: galaxy's CNI args: request_ip_range in, common.ipinfos out.
CNI_ARGS_ANNOTATION = "k8s.v1.cni.galaxy.io/args"
#: galaxy's named pool: pods carrying the same value share (and keep) its addresses.
POOL_ANNOTATION = "tke.cloud.tencent.com/eni-ip-pool"
#: Ours (galaxy issue #87): free a kept address after it has been unused this many seconds.
KEPT_TTL_ANNOTATION = "ipam.fixed-ip.io/kept-ttl-seconds"


class PodShapeError(ValueError):
    """The JSON is not a pod we can read (missing metadata, wrong types)."""


@dataclass(frozen=True, slots=True)
class OwnerRef:
    kind: str
    name: str
    uid: str
    controller: bool


@dataclass(frozen=True, slots=True)
class PodFacts:
    namespace: str
    name: str
    uid: str
    node_name: str | None = None
    phase: str | None = None
    deleting: bool = False
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    owners: tuple[OwnerRef, ...] = ()
    eni_ip_count: int = 0
    pod_ips: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def managed(self) -> bool:
        """Ours when it requests the eni-ip resource; the annotation alone is not enough."""
        return self.eni_ip_count > 0

    @property
    def wants_fixed_ip_network(self) -> bool:
        return NETWORKS_ANNOTATION in self.annotations

    @property
    def controller(self) -> OwnerRef | None:
        for ref in self.owners:
            if ref.controller:
                return ref
        return None

    @property
    def terminated(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


def _str_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PodShapeError(f"{where} must be an object")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise PodShapeError(f"{where} must map strings to strings")
        out[k] = v
    return out


def _quantity_count(value: Any) -> int:
    """Extended resources are whole numbers; "1", 1 and "1.0" all ask for one."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, str):
        try:
            return max(int(float(value)), 0)
        except ValueError:
            return 0
    return 0


def eni_ip_count(spec: Mapping[str, Any]) -> int:
    """Largest eni-ip request or limit over containers (the scheduler gates on either)."""
    count = 0
    for key in ("containers", "initContainers"):
        containers = spec.get(key) or []
        if not isinstance(containers, list):
            raise PodShapeError(f"spec.{key} must be a list")
        for container in containers:
            if not isinstance(container, Mapping):
                raise PodShapeError(f"spec.{key} items must be objects")
            resources = container.get("resources") or {}
            if not isinstance(resources, Mapping):
                continue
            for part in ("requests", "limits"):
                values = resources.get(part) or {}
                if isinstance(values, Mapping) and ENI_IP_RESOURCE in values:
                    count = max(count, _quantity_count(values[ENI_IP_RESOURCE]))
    return count


def pod_facts(obj: Any) -> PodFacts:
    """Read a v1.Pod JSON object; raise ``PodShapeError`` naming the bad part."""
    if not isinstance(obj, Mapping):
        raise PodShapeError("pod must be a JSON object")
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        raise PodShapeError("pod.metadata is missing")
    namespace, name, uid = meta.get("namespace") or "default", meta.get("name"), meta.get("uid")
    for label, value in (("namespace", namespace), ("name", name), ("uid", uid)):
        if not isinstance(value, str) or not value:
            raise PodShapeError(f"pod.metadata.{label} is missing")
    assert isinstance(name, str) and isinstance(uid, str) and isinstance(namespace, str)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    if not isinstance(spec, Mapping) or not isinstance(status, Mapping):
        raise PodShapeError("pod.spec and pod.status must be objects")
    owners = []
    refs = meta.get("ownerReferences") or []
    if not isinstance(refs, list):
        raise PodShapeError("pod.metadata.ownerReferences must be a list")
    for ref in refs:
        if isinstance(ref, Mapping):
            owners.append(OwnerRef(str(ref.get("kind", "")), str(ref.get("name", "")),
                                   str(ref.get("uid", "")), bool(ref.get("controller", False))))
    node = spec.get("nodeName")
    ips = tuple(str(i.get("ip")) for i in status.get("podIPs") or [] if isinstance(i, Mapping))
    return PodFacts(
        namespace=namespace,
        name=name,
        uid=uid,
        node_name=node if isinstance(node, str) and node else None,
        phase=status.get("phase") if isinstance(status.get("phase"), str) else None,
        deleting=meta.get("deletionTimestamp") is not None,
        annotations=_str_map(meta.get("annotations"), "pod.metadata.annotations"),
        labels=_str_map(meta.get("labels"), "pod.metadata.labels"),
        owners=tuple(owners),
        eni_ip_count=eni_ip_count(spec),
        pod_ips=ips,
    )
