"""Waits and checks shared by the real-cluster tests."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from collections import Counter
from typing import Any

import httpx

from tests.e2e_real.cluster import (
    ARGS_ANNOTATION,
    POOLS,
    ROUTABLE,
    SUBNET_OF_NODE,
    Cluster,
    eventually,
    is_bound,
    pod_address,
)


def wait_bound(cluster: Cluster, ns: str, names: list[str], *,
               timeout: float = 180) -> dict[str, dict[str, Any]]:
    """The named pods once all are bound, by name."""
    def check() -> dict[str, dict[str, Any]] | None:
        pods = {p["metadata"]["name"]: p for p in cluster.kube.pods(ns)}
        if all(is_bound(pods.get(n)) for n in names):
            return {n: pods[n] for n in names}
        return None

    def describe() -> str:
        pods = {p["metadata"]["name"]: p for p in cluster.kube.pods(ns)}
        unbound = [n for n in names if not is_bound(pods.get(n))]
        return f"{len(unbound)} of {len(names)} unbound, e.g. {unbound[:5]}"

    try:
        return eventually(check, timeout=timeout, what=f"{len(names)} pods bound in {ns}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {describe()}") from None


def wait_gone(cluster: Cluster, ns: str, name: str, uid: str, *, timeout: float = 120) -> None:
    def gone() -> bool:
        pod = cluster.kube.pod(ns, name)
        return pod is None or pod["metadata"]["uid"] != uid

    eventually(gone, timeout=timeout, what=f"pod {ns}/{name} ({uid}) gone")


def check_placement(pod: dict[str, Any]) -> str:
    """A bound pod's address: on a routable node, from the pool that routes from that node,
    carried by galaxy's args annotation exactly as galaxy's CNI reads it."""
    name, node = pod["metadata"]["name"], pod["spec"]["nodeName"]
    assert node in ROUTABLE, f"{name} bound to {node}, which routes no pool"
    raw = pod["metadata"]["annotations"][ARGS_ANNOTATION]
    (info,) = json.loads(raw)["common"]["ipinfos"]
    (pool,) = [p for p in POOLS if p["subnet"] == SUBNET_OF_NODE[node]]
    address = pod_address(pod)
    assert address is not None
    network = ipaddress.ip_network(pool["subnet"])
    assert info == {"ip": f"{address}/{network.prefixlen}", "vlan": pool["vlan"],
                    "gateway": pool["gateway"]}, (name, info)
    assert ipaddress.ip_address(address) in network, (name, node, address)
    return address


def assert_distinct(addresses: list[str]) -> None:
    twice = {a: n for a, n in Counter(addresses).items() if n > 1}
    assert not twice, f"addresses handed out more than once: {twice}"


def rest(cluster: Cluster, path: str, *, token: str | None = None, **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{cluster.ipam.url}{path}", params=params, headers=headers, timeout=30)


def cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPAM_")}
    env.update(IPAM_URL=cluster.ipam.url, IPAM_TOKEN=cluster.read_token)
    return subprocess.run([sys.executable, "-m", "ipam", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def consistent(cluster: Cluster, ns: str) -> list[str]:
    """What is wrong between the namespace's pods and the database: a bound pod without its
    reservation, or an allocated row whose pod is not bound with that address."""
    pods = [p for p in cluster.kube.pods(ns) if is_bound(p)]
    rows = [r for r in cluster.db.taken(ns) if r["state"] == "allocated"]
    by_uid = {r["pod_uid"]: r for r in rows}
    problems = []
    for pod in pods:
        uid, address = pod["metadata"]["uid"], pod_address(pod)
        row = by_uid.get(uid)
        if address is None:
            problems.append(f"{pod['metadata']['name']} bound without an address")
        elif row is None or row["address"] != address:
            problems.append(f"{pod['metadata']['name']} bound with {address}, row {row}")
    bound = {p["metadata"]["uid"] for p in pods}
    problems += [f"row {r['address']} allocated to unbound {r['pod_name']} ({r['pod_uid']})"
                 for r in rows if r["pod_uid"] not in bound]
    return problems
