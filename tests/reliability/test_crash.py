"""kill -9 the service at random points of a bind burst, 20 rounds with a fixed seed.

After every restart: no address held by two pods, every pod the API server shows bound has
its reservation in PostgreSQL (the address in its annotation), and the addresses of pods that
never got bound are freed by the reconciler within its interval.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.api.conftest import SEED_NODES
from tests.conftest import FIXTURES
from tests.e2e.test_quickstart import free_port
from tests.fakeapi.objects import make_node, make_pod
from tests.fakeapi.server import FakeApiServer

ROUNDS = int(os.environ.get("IPAM_CRASH_ROUNDS", "20"))
PODS_PER_ROUND = 40
SEED = 20261128
ARGS = "k8s.v1.cni.galaxy.io/args"


class ServiceProcess:
    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "ipam", "serve"], env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT)
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                assert self.proc.poll() is None, self.log.read_text()[-3000:]
                try:
                    if (await client.get(f"{self.url}/readyz", timeout=1)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError("service not ready in 30 s")

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def service_process(db_url: str, fake_apiserver: FakeApiServer, tmp_path: Path
                    ) -> Iterator[ServiceProcess]:
    for name, ip in SEED_NODES.items():
        fake_apiserver.create("nodes", make_node(name, internal_ip=ip))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPAM_")}
    env.update({
        "IPAM_DATABASE_URL": db_url, "IPAM_KUBE_API_URL": fake_apiserver.url,
        "IPAM_HOST": "127.0.0.1", "IPAM_PORT": str(port), "IPAM_DATA_DIR": str(tmp_path),
        "IPAM_POOLS_FILE": str(FIXTURES / "galaxy/floatingip-config.yaml"),
        "IPAM_LOG_LEVEL": "WARNING", "IPAM_RECONCILER__INTERVAL_SECONDS": "0.5",
        "IPAM_RECONCILER__GRACE_SECONDS": "0", "IPAM_RECONCILER__UNBOUND_GRACE_SECONDS": "1",
        "IPAM_LEADER__RENEW_SECONDS": "0.2",
    })
    svc = ServiceProcess(env, port, tmp_path / "service.log")
    yield svc
    svc.stop()


async def schedule(client: httpx.AsyncClient, pod: dict[str, Any]) -> None:
    meta = pod["metadata"]
    await client.post("/v1/filter", json={"Pod": pod, "Nodes": None, "NodeNames": ["node-0"]})
    await client.post("/v1/bind", json={"PodName": meta["name"], "PodNamespace": "default",
                                        "PodUID": meta["uid"], "Node": "node-0"})


async def check_invariants(db_url: str, fake: FakeApiServer, *, unbound_must_be_free: bool
                           ) -> tuple[int, int]:
    pods = fake.list("pods", namespace="default")
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text(
                "SELECT pod_uid, host(address) FROM addresses WHERE state = 'allocated'"))
            held: dict[str, set[str]] = {}
            for uid, address in result:
                held.setdefault(uid, set()).add(address)
    finally:
        await engine.dispose()
    bound = unbound = 0
    seen: dict[str, str] = {}
    for pod in pods:
        meta, uid = pod["metadata"], pod["metadata"]["uid"]
        if pod["spec"].get("nodeName"):
            bound += 1
            ip = json.loads(meta["annotations"][ARGS])["common"]["ipinfos"][0]["ip"]
            address = ip.split("/")[0]
            assert address not in seen, f"{address} on {meta['name']} and {seen[address]}"
            seen[address] = meta["name"]
            assert held.get(uid) == {address}, f"bound pod {meta['name']} lost its reservation"
        else:
            unbound += 1
            if unbound_must_be_free:
                assert uid not in held, f"never-bound pod {meta['name']} still holds {held[uid]}"
    return bound, unbound


@pytest.mark.timeout(300)
async def test_kill9_during_binds(service_process: ServiceProcess, db_url: str,
                                  fake_apiserver: FakeApiServer) -> None:
    rng = random.Random(SEED)
    for round_no in range(ROUNDS):
        await service_process.start()
        # Every restart: the state the crash left must already be consistent for bound pods.
        await check_invariants(db_url, fake_apiserver, unbound_must_be_free=False)
        pods = [fake_apiserver.create("pods", make_pod(f"crash-{round_no}-{i}"))
                for i in range(PODS_PER_ROUND)]
        async with httpx.AsyncClient(base_url=service_process.url, timeout=5) as client:
            burst = [asyncio.create_task(schedule(client, p)) for p in pods]
            await asyncio.sleep(rng.uniform(0.05, 0.8))
            service_process.kill9()
            await asyncio.gather(*burst, return_exceptions=True)
    await service_process.start()
    started = asyncio.get_running_loop().time()
    # Within the reconciler's interval (0.5 s) after the unbound grace (1 s): all freed.
    deadline = started + 15
    while True:
        try:
            bound, unbound = await check_invariants(db_url, fake_apiserver,
                                                    unbound_must_be_free=True)
            break
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.25)
    freed_after = asyncio.get_running_loop().time() - started
    assert bound + unbound == ROUNDS * PODS_PER_ROUND
    assert bound > 0 and unbound > 0, (bound, unbound)  # the kills really hit mid-burst
    print(f"\ncrash loop: {ROUNDS} kill -9 rounds, {bound + unbound} pods, {bound} bound "
          f"(all with their reservation), {unbound} never bound (freed {freed_after:.1f}s "
          "after the last restart), 0 duplicates")
