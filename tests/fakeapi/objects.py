"""Builders for realistic objects (shape and size close to what a TKE cluster returns).

Everything returns plain JSON dicts (camelCase) ready for ``server.create`` or
for the official client's ``create_*`` methods as ``body``.
"""

from __future__ import annotations

import ipaddress
import uuid
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

JSON = dict[str, Any]

ENI_IP_RESOURCE = "tke.cloud.tencent.com/eni-ip"
"""Extended resource the IPAM hands out (one unit per fixed pod IP)."""

_TS = "2026-01-01T00:00:00Z"


def _node_ip(name: str) -> str:
    n = zlib.crc32(name.encode()) % (254 * 254)
    return str(ipaddress.IPv4Address("10.0.0.0") + 256 + (n // 254) * 256 + n % 254 + 1)


def owner_reference(
    owner: Mapping[str, Any], *, controller: bool = True, block_owner_deletion: bool = True
) -> JSON:
    """ownerReference pointing at ``owner`` (needs kind/apiVersion/metadata.name/uid)."""
    meta = owner["metadata"]
    if not meta.get("uid"):
        raise ValueError("owner has no metadata.uid; create it first")
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": controller,
        "blockOwnerDeletion": block_owner_deletion,
    }


def make_node(
    name: str,
    *,
    internal_ip: str | None = None,
    eni_ips: int = 32,
    cpu: str = "8",
    memory: str = "32329108Ki",
    pods: int = 110,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    ready: bool = True,
    unschedulable: bool = False,
    taints: Sequence[Mapping[str, Any]] | None = None,
    zone: str = "ap-guangzhou-3",
    instance_type: str = "SA2.2XLARGE32",
) -> JSON:
    """A v1.Node as a kubelet on a TKE CVM registers it (~4 KB serialised)."""
    ip = internal_ip or _node_ip(name)
    node_labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/instance-type": instance_type,
        "beta.kubernetes.io/os": "linux",
        "cloud.tencent.com/node-instance-id": f"ins-{zlib.crc32(name.encode()):08x}",
        "failure-domain.beta.kubernetes.io/region": "gz",
        "failure-domain.beta.kubernetes.io/zone": "100003",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": instance_type,
        "topology.kubernetes.io/region": "gz",
        "topology.kubernetes.io/zone": zone,
        "tke.cloud.tencent.com/nodepool-id": "np-8hx2k3l9",
        **(labels or {}),
    }
    node_annotations = {
        "node.alpha.kubernetes.io/ttl": "0",
        "volumes.kubernetes.io/controller-managed-attach-detach": "true",
        "tke.cloud.tencent.com/eni-ip-pool": f"{eni_ips}",
        **(annotations or {}),
    }
    capacity = {
        "cpu": cpu,
        "ephemeral-storage": "103079844Ki",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": memory,
        "pods": str(pods),
        ENI_IP_RESOURCE: str(eni_ips),
    }
    allocatable = dict(
        capacity,
        cpu=f"{int(cpu) * 1000 - 100}m" if cpu.isdigit() else cpu,
        **{"ephemeral-storage": "94998384074"},
    )
    heartbeat = _TS

    def cond(ctype: str, status: str, reason: str, message: str) -> JSON:
        return {
            "type": ctype,
            "status": status,
            "lastHeartbeatTime": heartbeat,
            "lastTransitionTime": _TS,
            "reason": reason,
            "message": message,
        }

    conditions = [
        cond(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        cond(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        cond("Ready", "True", "KubeletReady", "kubelet is posting ready status")
        if ready
        else cond("Ready", "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status."),
    ]
    images = [
        {
            "names": [
                f"ccr.ccs.tencentyun.com/tkeimages/{img}@sha256:{zlib.crc32(img.encode()):08x}"
                + "0" * 56,
                f"ccr.ccs.tencentyun.com/tkeimages/{img}:v1.{i}.0",
            ],
            "sizeBytes": 10_000_000 + i * 7_654_321,
        }
        for i, img in enumerate(
            ["tke-eni-agent", "tke-bridge-agent", "kube-proxy", "ip-masq-agent", "coredns", "pause"]
        )
    ]
    spec: JSON = {
        "podCIDR": "172.16.0.0/26",
        "podCIDRs": ["172.16.0.0/26"],
        "providerID": f"qcloud:///{zone}/ins-{zlib.crc32(name.encode()):08x}",
    }
    if unschedulable:
        spec["unschedulable"] = True
    if taints:
        spec["taints"] = [dict(t) for t in taints]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": node_labels, "annotations": node_annotations},
        "spec": spec,
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
            ],
            "allocatable": allocatable,
            "capacity": capacity,
            "conditions": conditions,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "images": images,
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": str(uuid.uuid5(uuid.NAMESPACE_DNS, name + "-boot")),
                "containerRuntimeVersion": "containerd://1.6.9-tke.8",
                "kernelVersion": "5.4.119-19.0009.44",
                "kubeProxyVersion": "v1.30.0-tke.5",
                "kubeletVersion": "v1.30.0-tke.5",
                "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, name).hex,
                "operatingSystem": "linux",
                "osImage": "TencentOS Server 3.1 (Final)",
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, name)).upper(),
            },
        },
    }


def make_pod(
    name: str,
    namespace: str = "default",
    *,
    eni_ips: int | None = 1,
    node_name: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    owner: Mapping[str, Any] | None = None,
    containers: int = 1,
    image: str = "nginx:1.25.3",
    scheduler_name: str | None = None,
    phase: str | None = None,
    pod_ip: str | None = None,
    host_network: bool = False,
    generate_name: str | None = None,
) -> JSON:
    """A workload pod whose first container requests ``eni_ips`` units of the ENI-IP resource.

    ``owner`` may be an owning object (a reference is derived) or a ready ownerReference dict.
    """
    meta: JSON = {
        "namespace": namespace,
        "labels": {"app": name.rsplit("-", 2)[0], **(labels or {})},
    }
    if generate_name:
        meta["generateName"] = generate_name
    else:
        meta["name"] = name
    if annotations:
        meta["annotations"] = dict(annotations)
    if owner is not None:
        meta["ownerReferences"] = [owner_reference(owner) if "metadata" in owner else dict(owner)]
    ctrs: list[JSON] = []
    for i in range(containers):
        requests = {"cpu": "250m", "memory": "256Mi"}
        limits = {"cpu": "1", "memory": "512Mi"}
        if i == 0 and eni_ips:
            requests[ENI_IP_RESOURCE] = str(eni_ips)
            limits[ENI_IP_RESOURCE] = str(eni_ips)
        ctrs.append(
            {
                "name": "app" if i == 0 else f"sidecar-{i}",
                "image": image,
                "ports": [{"containerPort": 8080 + i, "name": f"http-{i}", "protocol": "TCP"}],
                "env": [
                    {
                        "name": "POD_IP",
                        "valueFrom": {
                            "fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}
                        },
                    }
                ],
                "resources": {"requests": requests, "limits": limits},
                "volumeMounts": [
                    {
                        "name": "kube-api-access",
                        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                        "readOnly": True,
                    }
                ],
            }
        )
    spec: JSON = {
        "containers": ctrs,
        "volumes": [
            {
                "name": "kube-api-access",
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}
                    ],
                },
            }
        ],
    }
    if node_name:
        spec["nodeName"] = node_name
    if scheduler_name:
        spec["schedulerName"] = scheduler_name
    if host_network:
        spec["hostNetwork"] = True
    pod: JSON = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
    if phase or pod_ip:
        status: JSON = {}
        if phase:
            status["phase"] = phase
        if pod_ip:
            status["podIP"] = pod_ip
            status["podIPs"] = [{"ip": pod_ip}]
        pod["status"] = status
    return pod


def _workload(
    kind: str,
    name: str,
    namespace: str,
    replicas: int | None,
    eni_ips: int | None,
    labels: Mapping[str, str] | None,
) -> JSON:
    sel = {"app": name, **(labels or {})}
    template = make_pod(name, namespace, eni_ips=eni_ips, labels=sel)
    template_meta = {"labels": template["metadata"]["labels"]}
    spec: JSON = {
        "selector": {"matchLabels": sel},
        "template": {"metadata": template_meta, "spec": template["spec"]},
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "labels": sel},
        "spec": spec,
    }


def make_deployment(
    name: str,
    namespace: str = "default",
    *,
    replicas: int = 1,
    eni_ips: int | None = 1,
    labels: Mapping[str, str] | None = None,
) -> JSON:
    return _workload("Deployment", name, namespace, replicas, eni_ips, labels)


def make_statefulset(
    name: str,
    namespace: str = "default",
    *,
    replicas: int = 1,
    eni_ips: int | None = 1,
    labels: Mapping[str, str] | None = None,
) -> JSON:
    sts = _workload("StatefulSet", name, namespace, replicas, eni_ips, labels)
    sts["spec"]["serviceName"] = name
    return sts


def make_replicaset(
    name: str,
    namespace: str = "default",
    *,
    replicas: int = 1,
    eni_ips: int | None = 1,
    owner: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
) -> JSON:
    rs = _workload("ReplicaSet", name, namespace, replicas, eni_ips, labels)
    if owner is not None:
        rs["metadata"]["ownerReferences"] = [owner_reference(owner)]
    return rs


def make_configmap(
    name: str, namespace: str = "default", data: Mapping[str, str] | None = None
) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": dict(data or {}),
    }


def make_lease(
    name: str,
    namespace: str = "kube-system",
    *,
    holder: str | None = None,
    duration_seconds: int = 15,
) -> JSON:
    spec: JSON = {"leaseDurationSeconds": duration_seconds}
    if holder:
        spec["holderIdentity"] = holder
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
