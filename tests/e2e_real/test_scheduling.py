"""Single pods through the real kube-scheduler and the extender on its TLS listener."""

from __future__ import annotations

import json
import ssl

import httpx
import pytest

from tests.e2e_real.cluster import NODES, Cluster, eventually, is_bound, pod_address, pod_manifest
from tests.e2e_real.helpers import (
    assert_distinct,
    check_placement,
    cli,
    consistent,
    rest,
    wait_bound,
    wait_gone,
)

pytestmark = [pytest.mark.realkube, pytest.mark.timeout(600)]


def test_binds_only_to_routable_nodes_with_galaxy_args(cluster: Cluster, ns: str) -> None:
    cluster.use_scheduler(node_cache_capable=True)
    names = [f"p{i}" for i in range(12)]
    for name in names:
        cluster.kube.create_pod(ns, pod_manifest(name))
    pods = wait_bound(cluster, ns, names)
    addresses = [check_placement(p) for p in pods.values()]
    assert_distinct(addresses)

    # The kubelet stand-in reports each pod Running with the annotation's address.
    def running() -> bool:
        return all(p["status"].get("phase") == "Running" for p in cluster.kube.pods(ns))

    eventually(running, timeout=60, what="pods Running")
    for pod in cluster.kube.pods(ns):
        assert pod["status"]["podIP"] == pod_address(pod)
    assert consistent(cluster, ns) == []


def test_rest_cli_and_postgres_agree(cluster: Cluster, ns: str) -> None:
    cluster.use_scheduler(node_cache_capable=True)
    names = [f"agree-{i}" for i in range(5)]
    for name in names:
        cluster.kube.create_pod(ns, pod_manifest(name))
    pods = wait_bound(cluster, ns, names)
    truth = {(p["metadata"]["name"], p["metadata"]["uid"], p["spec"]["nodeName"],
              pod_address(p)) for p in pods.values()}
    assert len(truth) == 5

    assert rest(cluster, "/v1/addresses", namespace=ns).status_code == 401
    answer = rest(cluster, "/v1/addresses", token=cluster.read_token, namespace=ns,
                  state="allocated")
    assert answer.status_code == 200, answer.text
    via_rest = {(a["pod_name"], a["pod_uid"], a["node"], a["address"])
                for a in answer.json()["items"]}

    listed = cli(cluster, "ips", "list", "-n", ns, "--state", "allocated", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    via_cli = {(a["pod_name"], a["pod_uid"], a["node"], a["address"])
               for a in json.loads(listed.stdout)["items"]}

    via_db = {(r["pod_name"], r["pod_uid"], r["node"], r["address"])
              for r in cluster.db.taken(ns) if r["state"] == "allocated"}
    assert via_rest == via_cli == via_db == truth

    one = next(iter(pods.values()))
    single = rest(cluster, f"/v1/addresses/{pod_address(one)}", token=cluster.read_token)
    assert single.status_code == 200
    assert (single.json()["state"], single.json()["pod_uid"]) == (
        "allocated", one["metadata"]["uid"])


def test_delete_frees_with_the_default_policy(cluster: Cluster, ns: str) -> None:
    cluster.use_scheduler(node_cache_capable=True)
    pod = wait_bound(cluster, ns, [cluster.kube.create_pod(ns, pod_manifest("gone"))[
        "metadata"]["name"]])["gone"]
    address, uid = pod_address(pod), pod["metadata"]["uid"]
    eventually(lambda: (cluster.kube.pod(ns, "gone") or {}).get("status", {}).get("phase")
               == "Running", timeout=60, what="Running")
    cluster.kubelet.grace_delay = 6.0
    try:
        cluster.kube.delete_pod(ns, "gone")  # graceful: Terminating until the "kubelet" confirms
        terminating = cluster.kube.pod(ns, "gone")
        assert terminating is not None and terminating["metadata"].get("deletionTimestamp")
        # While Terminating the container may still use its address: not free yet.
        rows = {r["address"]: r for r in cluster.db.taken(ns)}
        if cluster.kube.pod(ns, "gone") is not None:  # still Terminating after the read
            assert rows.get(address, {}).get("pod_uid") == uid, rows
        wait_gone(cluster, ns, "gone", uid)
    finally:
        cluster.kubelet.grace_delay = 2.0
    # Released at once (maybe cooling down in quarantine first), then free for anyone.
    eventually(lambda: address not in {r["address"] for r in cluster.db.held(ns)},
               timeout=60, what=f"{address} released")
    eventually(lambda: address not in {r["address"] for r in cluster.db.taken(ns)},
               timeout=60, what=f"{address} free")
    view = rest(cluster, f"/v1/addresses/{address}", token=cluster.read_token)
    assert view.status_code == 200 and view.json()["state"] == "free", view.text


def test_extender_listener_requires_the_client_certificate(cluster: Cluster) -> None:
    with cluster.ipam.extender_client() as ext:
        assert ext.get("/healthz").status_code == 200
    with cluster.ipam.extender_client(with_cert=False) as anonymous, \
            pytest.raises((httpx.TransportError, ssl.SSLError)):
        anonymous.post("/v1/filter", content=b"{}")
    # The verbs are not on the REST port.
    assert httpx.post(f"{cluster.ipam.url}/v1/filter", content=b"{}").status_code == 404


@pytest.mark.parametrize("pin", ["nodeSelector", "nodeName-affinity"])
def test_pinned_to_an_unroutable_node_stays_pending_with_our_reason(
        cluster: Cluster, ns: str, pin: str) -> None:
    cluster.use_scheduler(node_cache_capable=True)
    pending_stays_pending(cluster, ns, pin)


def pending_stays_pending(cluster: Cluster, ns: str, pin: str) -> None:
    if pin == "nodeSelector":
        spec = {"nodeSelector": {"e2e/node": "node-x"}}
    else:
        spec = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": ["node-x"]}]}]}}}}
    cluster.kube.create_pod(ns, pod_manifest("pinned", **spec))

    def reason() -> str | None:
        for event in cluster.kube.events(ns, "pinned"):
            if event["reason"] == "FailedScheduling" and "routable" in event["message"]:
                return str(event["message"])
        return None

    message = eventually(reason, timeout=120, what="FailedScheduling event with our reason")
    assert f"node {NODES['node-x']} is in no routable subnet" in message, message
    pod = cluster.kube.pod(ns, "pinned")
    assert pod is not None and not is_bound(pod)
    assert pod["status"]["phase"] == "Pending"
    assert [r for r in cluster.db.taken(ns) if r["pod_name"] == "pinned"] == []
    assert_distinct([r["address"] for r in cluster.db.taken()])
