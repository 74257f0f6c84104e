"""The real datapath: the reference ``bridge`` plugin calls ipam-cni and configures a netns.

Needs root, iproute2 and Debian's containernetworking-plugins (``apt-get install -y
containernetworking-plugins iproute2``); without them the tests skip, or fail under CI=true.
The addresses come from the real service (``cni_service``: real PostgreSQL, a pod bound
through the extender). The bridge and its addresses stay on this host: a private bridge, a
veth into a namespace we create, a test range, no masquerading and no traffic sent anywhere.
Everything is removed afterwards, and the forwarding sysctls that ``isGateway`` turns on are
restored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from tests.cni.cni_helpers import REPO_ROOT, CniService, ip_json

pytestmark = pytest.mark.netns

FORWARDING = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")


@dataclass
class Datapath:
    """One namespace + bridge, and how to run the bridge plugin against them."""

    netns: str
    bridge: str
    cni_path: str
    token_file: Path
    container_id: str
    cni_bin: Path

    def conf(self, service: CniService, version: str) -> dict[str, Any]:
        ipam: dict[str, Any] = {"type": "ipam-cni", "url": service.url, "timeoutSeconds": 5}
        if service.token is not None:
            ipam["tokenFile"] = str(self.token_file)
        return {
            "cniVersion": version,
            "name": "fixed",
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": True,
            "ipam": ipam,
        }

    def run(
        self, command: str, conf: dict[str, Any], cni_args: str
    ) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": self.container_id,
            "CNI_NETNS": f"/var/run/netns/{self.netns}",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": self.cni_path,
            "CNI_ARGS": cni_args + f";K8S_POD_INFRA_CONTAINER_ID={self.container_id}",
        }
        return subprocess.run(
            [str(self.cni_bin / "bridge")],
            input=json.dumps(conf),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def global_addresses(self) -> set[str]:
        links = ip_json("-n", self.netns, "addr", "show", "dev", "eth0")
        return {
            f"{a['local']}/{a['prefixlen']}"
            for link in links
            for a in link["addr_info"]
            if a.get("scope") == "global"
        }

    def default_gateways(self) -> set[str]:
        routes = ip_json("-n", self.netns, "route", "show", "default")
        routes += ip_json("-n", self.netns, "-6", "route", "show", "default")
        return {r["gateway"] for r in routes if r.get("dev") == "eth0" and "gateway" in r}

    def has_eth0(self) -> bool:
        links = ip_json("-n", self.netns, "link", "show")
        return any(link["ifname"] == "eth0" for link in links)


@pytest.fixture
def datapath(tmp_path: Path, netns_host: Path, cni_service: CniService) -> Iterator[Datapath]:
    # The bridge plugin finds the IPAM plugin by its type in CNI_PATH.
    shim_dir = tmp_path / "cni-bin"
    shim_dir.mkdir()
    shim = shim_dir / "ipam-cni"
    shim.write_text(
        f'#!/bin/sh\nPYTHONPATH={REPO_ROOT} exec {sys.executable} -m ipam.cni.plugin "$@"\n'
    )
    shim.chmod(0o755)
    token_file = tmp_path / "token"
    token_file.write_text(cni_service.token or "")
    suffix = f"{os.getpid() % 100000}{os.urandom(2).hex()}"
    path = Datapath(
        netns=f"ipamcni-{suffix}",
        bridge=f"ipcni{suffix}"[:15],
        cni_path=f"{shim_dir}:{netns_host}",
        token_file=token_file,
        container_id=f"netns-test-{suffix}",
        cni_bin=netns_host,
    )
    saved = {p: Path(p).read_text() for p in FORWARDING if Path(p).exists()}
    subprocess.run(["ip", "netns", "add", path.netns], check=True)
    try:
        yield path
    finally:
        subprocess.run(["ip", "netns", "del", path.netns], check=False)
        subprocess.run(["ip", "link", "del", path.bridge], capture_output=True, check=False)
        for p, value in saved.items():
            Path(p).write_text(value)


@pytest.mark.parametrize("version", ["1.0.0", "0.4.0", "0.3.1"])
def test_bridge_add_check_del(datapath: Datapath, cni_service: CniService, version: str) -> None:
    conf = datapath.conf(cni_service, version)
    expected = {cidr for cidr, _ in cni_service.expected_ips}

    added = datapath.run("ADD", conf, cni_service.cni_args)
    assert added.returncode == 0, added.stdout + added.stderr
    result = json.loads(added.stdout)
    assert {ip["address"] for ip in result["ips"]} == expected
    assert datapath.global_addresses() == expected
    assert datapath.default_gateways() == {gw for _, gw in cni_service.expected_ips}

    if version != "0.3.1":  # CHECK exists from 0.4.0 on
        checked = datapath.run("CHECK", {**conf, "prevResult": result}, cni_service.cni_args)
        assert checked.returncode == 0, checked.stdout + checked.stderr

    for _ in range(2):  # DEL is idempotent
        deleted = datapath.run("DEL", conf, cni_service.cni_args)
        assert deleted.returncode == 0, deleted.stdout + deleted.stderr
        assert not datapath.has_eth0()
    if cni_service.saw_delete is not None:
        assert cni_service.saw_delete(datapath.container_id)


def test_bridge_check_detects_a_changed_allocation(
    datapath: Datapath, cni_service: CniService
) -> None:
    conf = datapath.conf(cni_service, "1.0.0")
    added = datapath.run("ADD", conf, cni_service.cni_args)
    assert added.returncode == 0, added.stdout + added.stderr
    result = json.loads(added.stdout)
    result["ips"][0]["address"] = "10.99.0.8/24"  # not what the service allocated
    checked = datapath.run("CHECK", {**conf, "prevResult": result}, cni_service.cni_args)
    assert checked.returncode != 0
    assert json.loads(checked.stdout)["code"] == 106
    assert datapath.run("DEL", conf, cni_service.cni_args).returncode == 0


def test_bridge_passes_ipam_errors_through(datapath: Datapath, cni_service: CniService) -> None:
    # plain-pod requests no address: the service answers 404 not_managed, with its reason.
    plain = replace(cni_service, name="plain-pod", uid=None, expected_ips=[])
    added = datapath.run("ADD", datapath.conf(plain, "1.0.0"), plain.cni_args)
    assert added.returncode != 0
    error = json.loads(added.stdout)
    assert error["code"] == 102
    assert "tke.cloud.tencent.com/eni-ip" in error["msg"]
    assert datapath.global_addresses() == set()


def test_the_bind_reserved_the_test_range_address(cni_service: CniService) -> None:
    # Guards the tests above: they compare eth0 with what the bind reserved.
    assert cni_service.expected_ips == [("10.99.0.7/24", "10.99.0.254")]
