"""The CNI side of the API on the real service, and the real plugin talking to it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sqlalchemy import text

from tests.api.rest_conftest import (
    CNI,
    CNI_TOKEN,
    bind,
    rest_fixture,  # noqa: F401
    rest_seed_pod_fixture,  # noqa: F401
)
from tests.cni.cni_helpers import PluginRun, netconf, run_plugin
from tests.fakeapi.objects import make_pod
from tests.fakeapi.server import FakeApiServer
from tests.service_harness import RunningService

SEED_NAME = "test-busybox-5d8f7c9b6-abcde"


async def test_ips_of_a_bound_pod(rest: RunningService, rest_seed_pod: dict[str, Any]) -> None:
    await bind(rest, rest_seed_pod)
    resp = await rest.client.get(f"/v1/pods/default/{SEED_NAME}/ips", headers=CNI)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "namespace": "default", "name": SEED_NAME, "uid": rest_seed_pod["metadata"]["uid"],
        "ips": [{"address": "10.11.128.1", "prefix_length": 21, "cidr": "10.11.128.1/21",
                 "gateway": "10.11.135.254", "vlan": 1200, "pool": "10.11.128.0/21",
                 "family": 4, "routes": [{"dst": "0.0.0.0/0", "gw": "10.11.135.254"}]}]}


async def test_why_a_pod_has_no_address(rest: RunningService,
                                        fake_apiserver: FakeApiServer) -> None:
    fake_apiserver.create("pods", make_pod("waiting"))
    fake_apiserver.create("pods", make_pod("plain", eni_ips=None, annotations={
        "k8s.v1.cni.cncf.io/networks": "galaxy-k8s-vlan"}))
    cases = {"waiting": ("not_found", "holds no address"),
             "plain": ("not_managed", "tke.cloud.tencent.com/eni-ip"),
             "nobody": ("not_found", "does not exist")}
    for name, (code, fragment) in cases.items():
        resp = await rest.client.get(f"/v1/pods/default/{name}/ips", headers=CNI)
        assert resp.status_code == 404, resp.text
        error = resp.json()["error"]
        assert error["code"] == code and fragment in error["message"], error
    plain = (await rest.client.get("/v1/pods/default/plain/ips", headers=CNI)).json()["error"]
    assert "requests" in plain["message"] and "limits" in plain["message"]
    assert "k8s.v1.cni.cncf.io/networks annotation alone" in plain["message"]


async def test_container_deleted_is_audited_and_releases_nothing(
    rest: RunningService, rest_seed_pod: dict[str, Any]
) -> None:
    await bind(rest, rest_seed_pod)
    path = f"/v1/pods/default/{SEED_NAME}/container-deleted"
    for _ in range(2):
        resp = await rest.client.post(path, json={"container_id": "c0ffee", "uid": None},
                                      headers=CNI)
        assert resp.status_code == 202, resp.text
        assert resp.json() == {"action": "none", "addresses": ["10.11.128.1"]}
    async with rest.runtime.db.engine.connect() as conn:
        state = await conn.scalar(text("SELECT state FROM addresses WHERE address = "
                                       "'10.11.128.1'"))
        dels = await conn.scalar(text("SELECT count(*) FROM audit WHERE action = 'cni.del' "
                                      "AND actor = 'cni:node'"))
    assert (state, dels) == ("allocated", 2)
    gone = await rest.client.post("/v1/pods/default/nobody/container-deleted",
                                  json={"container_id": "c"}, headers=CNI)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    bad = await rest.client.post(path, json={"uid": "x"}, headers=CNI)
    assert bad.status_code == 422
    assert bad.json()["error"]["details"]["fields"][0]["field"] == "container_id"


async def _plugin(command: str, conf: dict[str, Any], name: str) -> PluginRun:
    args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}"
    return await asyncio.to_thread(run_plugin, command, conf, CNI_ARGS=args)


async def test_the_plugin_against_the_real_service(
    rest: RunningService, rest_seed_pod: dict[str, Any], fake_apiserver: FakeApiServer,
    tmp_path: Path,
) -> None:
    await bind(rest, rest_seed_pod)
    fake_apiserver.create("pods", make_pod("plain", eni_ips=None))
    token = tmp_path / "cni-token"
    token.write_text(CNI_TOKEN)
    conf = netconf(rest.url, token_file=token)
    added = await _plugin("ADD", conf, SEED_NAME)
    assert added.returncode == 0, added
    assert added.json["ips"] == [{"address": "10.11.128.1/21", "gateway": "10.11.135.254"}]
    deleted = await _plugin("DEL", conf, SEED_NAME)
    assert (deleted.returncode, deleted.stdout) == (0, ""), deleted
    assert (await _plugin("DEL", conf, "nobody")).returncode == 0  # nothing held: done
    for name, code in (("plain", 102), ("nobody", 101)):
        run = await _plugin("ADD", conf, name)
        assert (run.returncode, run.json["code"]) == (1, code), run
    wrong = netconf(rest.url + "/ipam", token_file=token)
    for command in ("ADD", "DEL"):
        run = await _plugin(command, wrong, SEED_NAME)
        assert (run.returncode, run.json["code"]) == (1, 100), run
        assert "route_not_found" in run.json["details"]
    token.write_text("wrong-token-0123456789")
    refused = await _plugin("ADD", conf, SEED_NAME)
    assert refused.json["code"] == 103 and json.loads(refused.stdout)["msg"]
