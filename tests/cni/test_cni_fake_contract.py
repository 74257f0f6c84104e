"""The plugin tests' fault injector says what the real service says, where it is not told
otherwise: each situation is put to both, and status, error code and body must agree.

This is what keeps ``FakeIpamService`` from drifting into a second, different copy of
``ipam.api.cni`` (it once acknowledged a DEL with ``{"action": "kept"}``, which the service
never sent).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.rest_conftest import CNI_TOKEN, bind, rest_settings, running_rest_service
from tests.cni.cni_helpers import CONTAINER_ID, POD_NAME, POD_NS, TOKEN, V4_IP, serve_fake
from tests.fakeapi.objects import make_node, make_pod
from tests.fakeapi.server import FakeApiServer
from tests.service_harness import RunningService, wait_until

#: Fields of an address that depend on which address the service picked.
PICKED = ("address", "cidr")


@pytest.fixture
async def real(db_url: str, fake_apiserver: FakeApiServer, tmp_path: Path
               ) -> AsyncIterator[tuple[RunningService, dict[str, Any]]]:
    """The real service with the seed's pool and ``default/p`` bound through the extender."""
    fake_apiserver.create("nodes", make_node("node-0", internal_ip="10.10.100.10"))
    pod = fake_apiserver.create("pods", make_pod(POD_NAME, POD_NS))
    async with running_rest_service(rest_settings(db_url, fake_apiserver, tmp_path)) as svc:
        await wait_until(lambda: svc.runtime.nodes.synced and len(svc.runtime.nodes) == 1)
        await bind(svc, pod)
        yield svc, pod


def _shape(status: int, body: Any) -> tuple[int, Any]:
    """Errors by status, code and envelope keys (messages may differ); bodies as they are."""
    if status >= 400:
        error = body["error"]
        return status, (error["code"], sorted(error), sorted(body))
    return status, body


async def _ask(client: httpx.AsyncClient, method: str, path: str, token: str | None,
               body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = await client.request(method, path, headers=headers, json=body)
    return _shape(resp.status_code, resp.json())


POD = f"/v1/pods/{POD_NS}/{POD_NAME}"
SITUATIONS = {
    "allocation": ("GET", f"{POD}/ips", True, None),
    "unknown pod": ("GET", f"/v1/pods/{POD_NS}/nobody/ips", True, None),
    "no token": ("GET", f"{POD}/ips", False, None),
    "wrong base path": ("GET", f"/wrong{POD}/ips", True, None),
    "wrong method": ("POST", f"{POD}/ips", True, {}),
    "container deleted": ("POST", f"{POD}/container-deleted", True,
                          {"container_id": CONTAINER_ID, "uid": None}),
    "deleted, unknown pod": ("POST", f"/v1/pods/{POD_NS}/nobody/container-deleted", True,
                             {"container_id": CONTAINER_ID, "uid": None}),
}


@pytest.mark.parametrize("situation", list(SITUATIONS))
async def test_fake_answers_as_the_real_service(
        real: tuple[RunningService, dict[str, Any]], situation: str) -> None:
    svc, pod = real
    method, path, authorised, body = SITUATIONS[situation]
    truth = await _ask(svc.client, method, path, CNI_TOKEN if authorised else None, body)
    picked = (await svc.client.get(f"{POD}/ips", headers={"Authorization":
                                                          f"Bearer {CNI_TOKEN}"})).json()
    (ip,) = picked["ips"]
    with serve_fake() as fake:
        # The fake knows default/p with V4_IP; the service picked some address of the same
        # pool for a pod of another uid. Everything else must be the same.
        fake.pods[(POD_NS, POD_NAME)]["uid"] = pod["metadata"]["uid"]
        fake.pods[(POD_NS, POD_NAME)]["ips"][0].update({k: ip[k] for k in PICKED})
        async with httpx.AsyncClient(base_url=fake.url, timeout=10) as client:
            told = await _ask(client, method, path, TOKEN if authorised else None, body)
    assert told == truth
    assert {k: v for k, v in ip.items() if k not in PICKED} == {
        k: v for k, v in V4_IP.items() if k not in PICKED}
