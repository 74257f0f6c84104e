"""Small builders for service tests: pods as the API server sends them, pools by node."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

from ipam.engine.pod import PodFacts, pod_facts
from ipam.storage.records import PoolRecord


def make_pod(name: str, *, namespace: str = "default", uid: str | None = None,
             annotations: dict[str, str] | None = None, owner: tuple[str, str] | None = None,
             labels: dict[str, str] | None = None) -> PodFacts:
    meta: dict[str, Any] = {"name": name, "namespace": namespace,
                            "uid": uid or str(uuid.uuid4()),
                            "annotations": annotations or {}, "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1],
                                    "uid": "owner-uid", "controller": True}]
    spec = {"containers": [{"name": "c", "resources": {
        "requests": {"tke.cloud.tencent.com/eni-ip": "1"},
        "limits": {"tke.cloud.tencent.com/eni-ip": "1"}}}]}
    return pod_facts({"metadata": meta, "spec": spec})


def deployment_pod(deployment: str, suffix: str, *, policy: str = "never",
                   uid: str | None = None) -> PodFacts:
    return make_pod(f"{deployment}-5d8f7c9b6-{suffix}", uid=uid,
                    annotations={"k8s.v1.cni.galaxy.io/release-policy": policy},
                    owner=("ReplicaSet", f"{deployment}-5d8f7c9b6"),
                    labels={"pod-template-hash": "5d8f7c9b6"})


def routable(pools: list[PoolRecord], node_ip: str) -> list[PoolRecord]:
    address = ipaddress.ip_address(node_ip)
    return [p for p in pools if p.routes_node(address)]


def small_config(*entries: tuple[str, str, str, int | None]) -> list[dict[str, Any]]:
    """(node subnet, ips, subnet, vlan) tuples to galaxy entries."""
    return [
        {"routableSubnet": node, "ips": [ips], "subnet": subnet,
         **({"vlan": vlan} if vlan is not None else {})}
        for node, ips, subnet, vlan in entries
    ]
