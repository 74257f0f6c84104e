"""The datapath tests again, against the REAL service instead of the fake.

``cni_service`` is overridden here: the real service (real PostgreSQL, the fake API server,
uvicorn) runs in a thread of its own, because the datapath tests are synchronous and block
while the bridge plugin runs. A pod is scheduled through the extender's bind; the address
the bind reserved (read from the Binding's galaxy annotation, not from the REST API) is what
eth0 in the namespace must get, gateway included, and DEL must take it away again.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.api.rest_conftest import CNI_TOKEN, rest_settings, running_rest_service
from tests.cni.cni_helpers import CniService
from tests.cni.test_cni_netns import (  # noqa: F401 - collected here with our cni_service
    _skip_reason,
    datapath,
    test_bridge_add_check_del,
    test_bridge_check_detects_a_changed_allocation,
)
from tests.fakeapi.objects import make_node, make_pod
from tests.fakeapi.server import FakeApiServer
from tests.service_harness import RunningService, wait_until

pytestmark = pytest.mark.netns

ARGS = "k8s.v1.cni.galaxy.io/args"
#: A test-only range on the test's own bridge; the pod gets the lowest, 10.99.0.7.
POOLS = [{"routableSubnet": "10.10.100.0/24", "ips": ["10.99.0.7~10.99.0.9"],
          "subnet": "10.99.0.0/24", "gateway": "10.99.0.254", "vlan": 99}]


class ServiceThread(threading.Thread):
    """Runs the service in its own event loop until ``stop()``."""

    def __init__(self, settings: Any, setup: Callable[[RunningService], Awaitable[None]]) -> None:
        super().__init__(name="ipam-service", daemon=True)
        self.settings = settings
        self.setup = setup
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.svc: RunningService | None = None
        self._stopping: asyncio.Event | None = None

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self.loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        try:
            async with running_rest_service(self.settings) as svc:
                self.svc = svc
                await self.setup(svc)
                self.ready.set()
                await self._stopping.wait()
        except BaseException as exc:
            self.error = exc
        finally:
            self.ready.set()

    def call(self, coro: Awaitable[Any]) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.loop is not None and self._stopping is not None:
            self.loop.call_soon_threadsafe(self._stopping.set)
        self.join(60)


@pytest.fixture
def cni_service(db_url: str, fake_apiserver: FakeApiServer, tmp_path: Path
                ) -> Iterator[CniService]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    pools_file = tmp_path / "pools.json"
    pools_file.write_text(json.dumps(POOLS))
    fake_apiserver.create("nodes", make_node("node-0", internal_ip="10.10.100.10"))
    pod = fake_apiserver.create("pods", make_pod("netns-pod"))
    meta = pod["metadata"]

    async def schedule(svc: RunningService) -> None:
        await wait_until(lambda: svc.runtime.nodes.synced and len(svc.runtime.nodes) == 1)
        resp = await svc.client.post("/v1/bind", json={
            "PodName": meta["name"], "PodNamespace": meta["namespace"], "PodUID": meta["uid"],
            "Node": "node-0"})
        assert resp.json() == {"Error": ""}, resp.text

    settings = rest_settings(db_url, fake_apiserver, tmp_path, pools_file=pools_file)
    thread = ServiceThread(settings, schedule)
    thread.start()
    try:
        thread.ready.wait(120)
        if thread.error is not None:
            raise thread.error
        assert thread.svc is not None
        bound = fake_apiserver.get("pods", meta["name"], namespace=meta["namespace"])
        infos = json.loads(bound["metadata"]["annotations"][ARGS])["common"]["ipinfos"]
        svc = thread.svc

        async def deletes(container_id: str) -> int:
            async with svc.runtime.db.engine.connect() as conn:
                count = await conn.scalar(text(
                    "SELECT count(*) FROM audit WHERE action = 'cni.del' AND actor = 'cni:node' "
                    "AND reason LIKE :c"), {"c": f"%container {container_id};%"})
            return int(count or 0)

        yield CniService(
            url=svc.url, token=CNI_TOKEN,
            expected_ips=[(i["ip"], i["gateway"]) for i in infos],
            namespace=meta["namespace"], name=meta["name"], uid=meta["uid"],
            saw_delete=lambda container_id: thread.call(deletes(container_id)) > 0,
        )
    finally:
        thread.stop()
    assert not thread.is_alive()


def test_the_bind_reserved_the_test_range_address(cni_service: CniService) -> None:
    # Guards the datapath tests above: they compare eth0 with what the bind reserved.
    assert cni_service.expected_ips == [("10.99.0.7/24", "10.99.0.254")]
