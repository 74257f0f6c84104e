"""Fixtures for the CNI plugin tests; the machinery lives in ``cni_helpers``.

``fake_service`` is the fault injector of the plugin's own tests (framings, delays, odd
answers); ``cni_service`` is the real service, which the datapath tests allocate from.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.rest_conftest import ADMIN, CNI_TOKEN, rest_settings
from tests.cni.cni_helpers import TOKEN, CniService, FakeIpamService, serve_fake, wait_for
from tests.fakeapi.objects import make_node, make_pod
from tests.fakeapi.server import FakeApiServer
from tests.service_thread import service_in_thread
from tests.system_packages import command, missing

CNI_BIN = Path("/usr/lib/cni")
ARGS = "k8s.v1.cni.galaxy.io/args"
#: A test-only range on the test's own bridge; the pod gets the lowest, 10.99.0.7.
POOLS = [{"routableSubnet": "10.10.100.0/24", "ips": ["10.99.0.7~10.99.0.9"],
          "subnet": "10.99.0.0/24", "gateway": "10.99.0.254", "vlan": 99}]


@pytest.fixture
def fake_service() -> Iterator[FakeIpamService]:
    """The fault injector on 127.0.0.1, knowing ``default/p`` with one IPv4 address."""
    with serve_fake() as fake:
        yield fake


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 (certificate, key)."""
    openssl = command("openssl", "openssl")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=ipam-test", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="session")
def netns_host() -> Path:
    """What the datapath tests need from this host: root, iproute2 with working network
    namespaces, and Debian's reference CNI plugins. Returns the plugins' directory."""
    if os.geteuid() != 0:
        missing("needs root to create network namespaces and bridges")
    ip = command("ip", "iproute2")
    probe = f"ipamcni-probe-{os.getpid()}"
    made = subprocess.run([ip, "netns", "add", probe], capture_output=True, text=True,
                          check=False)
    if made.returncode != 0:
        missing(f"ip netns is unavailable here: {made.stderr.strip()}")
    subprocess.run([ip, "netns", "del", probe], check=False)
    if not (CNI_BIN / "bridge").exists():
        missing(f"needs {CNI_BIN}/bridge (apt-get install -y containernetworking-plugins)")
    return CNI_BIN


@pytest.fixture
def cni_service(netns_host: Path, db_url: str, fake_apiserver: FakeApiServer, tmp_path: Path
                ) -> Iterator[CniService]:
    """The real service (real PostgreSQL, the fake API server, uvicorn) in a thread of its own:
    the datapath tests are synchronous and block while the bridge plugin runs. A pod is
    scheduled through the extender's bind; the address the bind reserved (read from the
    Binding's galaxy annotation, not from the REST API) is what eth0 must get.

    ``plain-pod`` exists too and requests no address (``not_managed``).
    """
    pools_file = tmp_path / "pools.json"
    pools_file.write_text(json.dumps(POOLS))
    fake_apiserver.create("nodes", make_node("node-0", internal_ip="10.10.100.10"))
    fake_apiserver.create("pods", make_pod("plain-pod", eni_ips=None))
    meta = fake_apiserver.create("pods", make_pod("netns-pod"))["metadata"]
    settings = rest_settings(db_url, fake_apiserver, tmp_path, pools_file=pools_file)
    with service_in_thread(settings) as svc, httpx.Client(base_url=svc.url, timeout=30) as http:
        wait_for(lambda: svc.runtime.nodes.synced and len(svc.runtime.nodes) == 1)
        bound = http.post("/v1/bind", json={
            "PodName": meta["name"], "PodNamespace": meta["namespace"], "PodUID": meta["uid"],
            "Node": "node-0"})
        assert bound.json() == {"Error": ""}, bound.text
        pod = fake_apiserver.get("pods", meta["name"], namespace=meta["namespace"])
        infos = json.loads(pod["metadata"]["annotations"][ARGS])["common"]["ipinfos"]

        def saw_delete(container_id: str) -> bool:
            audit = http.get("/v1/audit", headers=ADMIN,
                             params={"action": "cni.del", "actor": "cni:node"})
            assert audit.status_code == 200, audit.text
            return any(f"container {container_id};" in (row["reason"] or "")
                       for row in audit.json()["items"])

        yield CniService(
            url=svc.url, token=CNI_TOKEN,
            expected_ips=[(i["ip"], i["gateway"]) for i in infos],
            namespace=meta["namespace"], name=meta["name"], uid=meta["uid"],
            saw_delete=saw_delete,
        )
