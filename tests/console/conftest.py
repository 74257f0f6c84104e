"""The console in a real browser: Debian's chromium driven by selenium through chromium-driver,
against the real service (uvicorn, PostgreSQL, the fake API server) holding real data.

One service and one browser per module: the data is made the way a cluster makes it (pools
imported from galaxy's ConfigMap, pods bound through the extender's bind, a pod deleted and
its address kept by the release policy, an address reserved through the REST API).
Outside CI the browser tests skip with one line when chromium is missing; with CI=true they
fail instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ipam.services.runtime import Runtime
from tests.api.rest_conftest import ADMIN, ADMIN_TOKEN, READ_TOKEN, rest_settings
from tests.conftest import FIXTURES
from tests.fakeapi.objects import (
    make_deployment,
    make_node,
    make_pod,
    make_replicaset,
    make_statefulset,
)
from tests.fakeapi.server import FakeApiServer
from tests.pg import DatabaseFactory
from tests.service_harness import RunningService
from tests.service_thread import service_in_thread

SHOTS = Path(__file__).parents[2] / "docs" / "console"
NODES = {"node-0": "10.10.100.10", "node-1": "10.10.100.11", "node-2": "10.10.101.10",
         "node-x": "10.20.0.5"}
#: A second, small pool next to the seed's, routable from node-2 only, mostly used.
EDGE_POOL = {"routableSubnet": "10.10.101.0/24", "ips": ["10.12.0.2~10.12.0.30"],
             "subnet": "10.12.0.0/27", "gateway": "10.12.0.1", "vlan": 1300}
EDGE_REPLICAS = 22
POLICY = "k8s.v1.cni.galaxy.io/release-policy"
NETWORKS = "k8s.v1.cni.cncf.io/networks"
POOL = "tke.cloud.tencent.com/eni-ip-pool"
#: A running pod whose address the database does not know (created after the first pass).
LEGACY_IP = "10.11.130.7"
RESERVED_IP = "10.11.135.250"


def chromium_paths() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    return (browser, driver) if browser and driver else None


def require_chromium() -> tuple[str, str]:
    found = chromium_paths()
    if found is None:
        message = ("chromium and chromium-driver are not installed "
                   "(apt-get install chromium chromium-driver)")
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=True)
    return found


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition"
             ) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.05)


@dataclass
class Cluster:
    """The running service, its fake API server, and what the seed made."""

    svc: RunningService
    fake: FakeApiServer
    http: httpx.Client
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Address of each seeded pod (namespace/name -> address).
    ips: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.svc.url

    @property
    def runtime(self) -> Runtime:
        return self.svc.runtime

    def create_pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        created = self.fake.create("pods", pod)
        meta = created["metadata"]
        self.pods[f"{meta['namespace']}/{meta['name']}"] = created
        return created

    def bind(self, pod: dict[str, Any], node: str) -> str:
        """Schedule through the extender's bind, as kube-scheduler does; the pod's address."""
        meta = pod["metadata"]
        resp = self.http.post("/v1/bind", json={
            "PodName": meta["name"], "PodNamespace": meta["namespace"], "PodUID": meta["uid"],
            "Node": node})
        assert resp.status_code == 200 and resp.json() == {"Error": ""}, resp.text
        key = f"{meta['namespace']}/{meta['name']}"
        got = self.http.get(f"/v1/pods/{meta['namespace']}/{meta['name']}/ips", headers=ADMIN)
        assert got.status_code == 200, got.text
        address: str = got.json()["ips"][0]["address"]
        self.ips[key] = address
        return address

    def address(self, ip: str) -> dict[str, Any]:
        resp = self.http.get(f"/v1/addresses/{ip}", headers=ADMIN)
        assert resp.status_code == 200, resp.text
        doc: dict[str, Any] = resp.json()
        return doc


def seed_pools() -> list[dict[str, Any]]:
    """The entries of the seed's galaxy ConfigMap, as galaxy keeps them."""
    doc = yaml.safe_load((FIXTURES / "galaxy/floatingip-config.yaml").read_text())
    entries: list[dict[str, Any]] = json.loads(doc["data"]["floatingips"])
    return entries


def _fixed_pod(name: str, owner: dict[str, Any], policy: str, **extra: Any) -> dict[str, Any]:
    annotations = {NETWORKS: "galaxy-k8s-vlan", POLICY: policy}
    return make_pod(name, owner=owner, annotations=annotations, **extra)


def seed(cluster: Cluster) -> None:
    """Workloads with fixed IPs, a bare pod, a named pool, a kept address, a reservation."""
    fake = cluster.fake
    sts = fake.create("statefulsets", make_statefulset("db", replicas=3))
    for i in range(3):
        pod = cluster.create_pod(_fixed_pod(f"db-{i}", sts, "immutable"))
        cluster.bind(pod, "node-0" if i < 2 else "node-1")
    deploy = fake.create("deployments", make_deployment("web", replicas=2))
    rs = fake.create("replicasets", make_replicaset("web-5d8f7c9b6", replicas=2, owner=deploy))
    for suffix in ("x7k2p", "q9m4t"):
        pod = cluster.create_pod(_fixed_pod(f"web-5d8f7c9b6-{suffix}", rs, "never",
                                            labels={"pod-template-hash": "5d8f7c9b6"}))
        cluster.bind(pod, "node-1")
    api = fake.create("deployments", make_deployment("api", namespace="edge",
                                                     replicas=EDGE_REPLICAS))
    api_rs = fake.create("replicasets", make_replicaset("api-6c9f8d7b5", namespace="edge",
                                                        replicas=EDGE_REPLICAS, owner=api))
    for i in range(EDGE_REPLICAS):
        pod = cluster.create_pod(_fixed_pod(f"api-6c9f8d7b5-{i:05x}", api_rs, "immutable",
                                            namespace="edge",
                                            labels={"pod-template-hash": "6c9f8d7b5"}))
        cluster.bind(pod, "node-2")
    plain = cluster.create_pod(make_pod("batch-report", annotations={NETWORKS: "galaxy-k8s-vlan"}))
    cluster.bind(plain, "node-0")
    resp = cluster.http.post("/v1/pool", headers=ADMIN,
                             json={"name": "cache", "size": 2, "preAllocateIP": True})
    assert resp.status_code == 200, resp.text
    # db-2 is deleted (evicted): immutable keeps its address for ordinal 2 (replicas 3).
    fake.delete("pods", "db-2", namespace="default")
    kept = cluster.ips["default/db-2"]
    wait_for(lambda: cluster.address(kept)["state"] == "kept", what=f"{kept} kept")
    resp = cluster.http.post(f"/v1/addresses/{RESERVED_IP}/reserve", headers=ADMIN,
                             json={"note": "licence server, ticket OPS-1432"})
    assert resp.status_code == 200, resp.text


@pytest.fixture(scope="module")
def cluster(db_factory: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Cluster]:
    fake = FakeApiServer().start()
    url = asyncio.run(db_factory.create())
    tmp = tmp_path_factory.mktemp("console")
    try:
        for name, ip in NODES.items():
            fake.create("nodes", make_node(name, internal_ip=ip))
        # Names the fixed-IP network but requests no address: the election-time pass reports
        # it (and cannot repair it).
        fake.create("pods", make_pod("no-resource", eni_ips=None,
                                     annotations={NETWORKS: "galaxy-k8s-vlan"}))
        # The periodic pass would repair what the dry-run test wants to find: only the pass
        # at election runs.
        pools = tmp / "floatingips.json"
        pools.write_text(json.dumps([*seed_pools(), EDGE_POOL]))
        settings = rest_settings(url, fake, tmp, pools_file=pools,
                                 reconciler={"interval_seconds": 3600, "grace_seconds": 0})
        with service_in_thread(settings) as svc, \
                httpx.Client(base_url=svc.url, timeout=30) as http:
            rt = svc.runtime
            wait_for(lambda: rt.nodes.synced and len(rt.nodes) == len(NODES),
                     what="nodes synced")
            cluster = Cluster(svc, fake, http)
            seed(cluster)
            reconciler = rt.reconciler
            wait_for(lambda: reconciler is not None and reconciler.last_report is not None,
                     what="the election-time reconciler pass")
            # Known only to the cluster: the dry run must find it, and change nothing.
            cluster.create_pod(make_pod("legacy-0", node_name="node-0", phase="Running",
                                        pod_ip=LEGACY_IP,
                                        annotations={NETWORKS: "galaxy-k8s-vlan"}))
            yield cluster
    finally:
        fake.stop()
        asyncio.run(db_factory.drop(url))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium, driver_path = require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,1000", "--force-device-scale-factor=1",
                "--disable-extensions", "--no-first-run", "--lang=en-US"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager never tries to download a browser or driver.
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


__all__ = ["ADMIN_TOKEN", "READ_TOKEN"]
