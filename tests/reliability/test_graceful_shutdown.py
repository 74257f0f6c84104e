"""SIGTERM during a bind: the bind finishes, new connections are refused, watches close, the
process exits 0."""

from __future__ import annotations

import asyncio
import signal

import httpx

from tests.fakeapi.objects import make_pod
from tests.fakeapi.server import FakeApiServer
from tests.reliability.test_crash import ServiceProcess, service_process  # noqa: F401
from tests.service_harness import wait_until


async def test_sigterm_finishes_in_flight_binds(service_process: ServiceProcess,  # noqa: F811
                                                fake_apiserver: FakeApiServer) -> None:
    await service_process.start()
    pod = fake_apiserver.create("pods", make_pod("drain"))
    meta = pod["metadata"]
    fake_apiserver.faults.hang(r"/pods/drain/binding$", 1.5, method="POST")
    async with httpx.AsyncClient(base_url=service_process.url, timeout=30) as client:
        bind = asyncio.create_task(client.post("/v1/bind", json={
            "PodName": "drain", "PodNamespace": "default", "PodUID": meta["uid"],
            "Node": "node-0"}))
        # Until the bind is waiting on the API server (the Binding POST has arrived, and hangs).
        await wait_until(lambda: fake_apiserver.request_count(
            "POST", r"/pods/drain/binding$") == 1)
        assert service_process.proc is not None
        service_process.proc.send_signal(signal.SIGTERM)
        reply = await bind
    assert reply.status_code == 200 and reply.json() == {"Error": ""}
    assert fake_apiserver.get("pods", "drain", namespace="default")["spec"]["nodeName"] == "node-0"
    code = await asyncio.to_thread(service_process.proc.wait, 30)
    assert code == 0
    assert fake_apiserver.watch_count() == 0  # its watches are closed
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            await client.get(f"{service_process.url}/healthz")
        raise AssertionError("the service still answers after exiting")
    except httpx.TransportError:
        pass
