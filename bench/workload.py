"""What the benchmarks send: pool configs, nodes and pods as the API server stores them, and
kube-scheduler's extender bodies (ExtenderArgs / ExtenderBindingArgs, capitalised keys)."""

from __future__ import annotations

import ipaddress
import json
import zlib
from pathlib import Path
from typing import Any

import orjson

from tests.fakeapi.objects import make_deployment, make_node, make_pod, make_replicaset

NAMESPACE = "bench"
#: Every node the benchmarks create has its InternalIP in here (make_node's scheme).
NODE_SUBNET = "10.0.0.0/16"


def pool_entry(subnet: str, *, routable: str = NODE_SUBNET, count: int | None = None,
               vlan: int = 1200, name: str | None = None) -> dict[str, Any]:
    """A galaxy floatingips entry for ``subnet``: all usable addresses but the last (the
    gateway), or exactly ``count`` addresses from the first usable one."""
    net = ipaddress.ip_network(subnet)
    first = net.network_address + 1
    gateway = net.broadcast_address - (1 if net.version == 4 else 0)
    last = gateway - 1 if count is None else first + count - 1
    if int(last) >= int(gateway):
        raise ValueError(f"{count} addresses do not fit in {subnet}")
    entry: dict[str, Any] = {"routableSubnet": routable, "ips": [f"{first}~{last}"],
                             "subnet": subnet, "gateway": str(gateway), "vlan": vlan}
    if name:
        entry["name"] = name
    return entry


def write_pools(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(entries))
    return path


def node_names(count: int) -> list[str]:
    return [f"node-{i:05d}" for i in range(count)]


def nodes(count: int) -> list[dict[str, Any]]:
    """``count`` realistic v1.Nodes (~4 KB each) with InternalIPs inside ``NODE_SUBNET``."""
    return [make_node(name) for name in node_names(count)]


def plain_pods(prefix: str, count: int) -> list[dict[str, Any]]:
    """Bare pods asking for one eni-ip each (bind benchmark)."""
    return [make_pod(f"{prefix}-{i:06d}", NAMESPACE) for i in range(count)]


def deployments(count: int, replicas: int) -> list[dict[str, Any]]:
    """``count`` Deployments of ``replicas`` pods each (Spiderpool's comparison shape)."""
    return [make_deployment(f"app-{d:03d}", NAMESPACE, replicas=replicas) for d in range(count)]


def replicaset_for(deployment: dict[str, Any]) -> dict[str, Any]:
    """The Deployment's ReplicaSet, owned by it (the Deployment must be stored: it needs a
    UID), named ``<deployment>-<pod-template-hash>`` as the controller names it."""
    name = deployment["metadata"]["name"]
    template_hash = f"{zlib.crc32(name.encode()):08x}"[:10]
    return make_replicaset(f"{name}-{template_hash}", NAMESPACE,
                           replicas=deployment["spec"]["replicas"], owner=deployment,
                           labels={"pod-template-hash": template_hash})


def pods_of(replicaset: dict[str, Any], replicas: int) -> list[dict[str, Any]]:
    """The ReplicaSet's pods, owned by it, named like the controller names them."""
    rs_name = replicaset["metadata"]["name"]
    template_hash = replicaset["metadata"]["labels"]["pod-template-hash"]
    out = []
    for r in range(replicas):
        suffix = f"{zlib.crc32(f'{rs_name}/{r}'.encode()):08x}"[:5]
        out.append(make_pod(f"{rs_name}-{suffix}", NAMESPACE, owner=replicaset,
                            labels={"pod-template-hash": template_hash}))
    return out


def filter_names_body(pod: dict[str, Any], names: list[str]) -> bytes:
    """nodeCacheCapable: true -- names only, ``"Nodes": null``."""
    return orjson.dumps({"Pod": pod, "Nodes": None, "NodeNames": names})


def bind_body(pod: dict[str, Any], node: str) -> bytes:
    meta = pod["metadata"]
    return orjson.dumps({"PodName": meta["name"], "PodNamespace": meta["namespace"],
                         "PodUID": meta["uid"], "Node": node})
