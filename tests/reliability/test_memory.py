"""Memory per request, bounded below the shipped limit (issue 14, item 3).

- each route has its cap, refused from the declared length before a byte of the body is read;
- large bodies take turns for their share of the bytes in flight (small ones pass meanwhile),
  and one that cannot get it in time is a 503;
- with a token file, a body is read only for a caller that shows a known token;
- a real `ipam serve` under a hostile mix of the largest bodies each route accepts stays well
  under the Deployment's memory limit (the figures are in docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from ipam.api.body_limit import BodyBudget
from tests.api.conftest import service_settings
from tests.api.rest_conftest import ADMIN, rest_fixture  # noqa: F401
from tests.fakeapi.objects import make_node, make_pod
from tests.fakeapi.server import FakeApiServer
from tests.service_harness import RunningService, running_service

MiB = 1 << 20
ROOT = Path(__file__).parents[2]


async def post_headers(port: int, path: str, length: int, extra: bytes = b""
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A POST whose headers declare ``length`` bytes; no body sent yet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s"
                 b"Content-Length: %d\r\n\r\n" % (path.encode(), extra, length))
    await writer.drain()
    return reader, writer


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    status = int(head.split()[1])
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    return status, orjson.loads(await reader.readexactly(length))


def port_of(svc: RunningService) -> int:
    return int(svc.url.rsplit(":", 1)[1])


@pytest.mark.parametrize(("path", "length"), [
    ("/v1/ip", 2 * MiB),                    # REST: 1 MiB
    ("/v1/bind", 2 * MiB),
    ("/v1/pools/import", 5 * MiB),          # the pool config's 4 MiB
    ("/v1/filter", 32 * MiB + 1),           # full node objects: 32 MiB
])
async def test_a_declared_length_over_the_route_cap_is_413_before_the_body(
        service: RunningService, path: str, length: int) -> None:
    reader, writer = await post_headers(port_of(service), path, length)
    try:
        status, body = await answer(reader)  # no byte of the body was sent
        assert status == 413 and body["error"]["code"] == "too_large"
    finally:
        writer.close()


@pytest.fixture
async def small_budget(db_url: str, fake_apiserver: FakeApiServer, tmp_path: Path
                       ) -> AsyncIterator[RunningService]:
    """Large bodies (over 1 MiB) may hold 4 MiB together, all bodies 6 MiB."""
    fake_apiserver.create("nodes", make_node("node-0", internal_ip="10.10.100.10"))
    settings = service_settings(db_url, fake_apiserver, tmp_path, max_body_bytes=4 * MiB,
                                body_bytes_in_flight=6 * MiB, http_body_timeout_seconds=60)
    async with running_service(settings) as svc:
        yield svc


def budget(svc: RunningService) -> BodyBudget:
    found: BodyBudget = svc.app_state.body_budget  # type: ignore[attr-defined]
    return found


async def until(predicate: Any) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), 30)


async def test_large_bodies_take_turns_and_small_ones_pass(small_budget: RunningService
                                                           ) -> None:
    svc = small_budget
    assert (await svc.client.get("/healthz")).status_code == 200
    first = await post_headers(port_of(svc), "/v1/filter", 3 * MiB)
    await until(lambda: getattr(svc.app_state, "body_budget", None) is not None
                and budget(svc).in_flight == 3 * MiB)
    second = await post_headers(port_of(svc), "/v1/filter", 3 * MiB)
    # A window for the second body to be (wrongly) let in: what is asserted is that nothing
    # happens. BodyBudget has no public count of waiting bodies to wait on instead.
    await asyncio.sleep(0.2)
    # The second waits for its share: one large body in flight, 3 MiB of the large 4.
    assert (budget(svc).in_flight, budget(svc).large_in_flight) == (3 * MiB, 3 * MiB)
    # A small call is not held up by it.
    bind = await svc.client.post("/v1/bind", json={"PodName": "p", "PodNamespace": "d",
                                                   "PodUID": "u", "Node": "node-0"})
    assert bind.status_code == 200 and "not found" in bind.json()["Error"]
    junk = b" " * (3 * MiB)
    for reader, writer in (first, second):
        writer.write(junk)
        await writer.drain()
        status, body = await answer(reader)
        assert status == 400 and "JSON" in body["Error"]
        writer.close()
    await until(lambda: budget(svc).in_flight == 0)
    assert budget(svc).large_in_flight == 0


async def test_a_large_body_that_cannot_get_its_share_in_time_is_503(
        db_url: str, fake_apiserver: FakeApiServer, tmp_path: Path) -> None:
    settings = service_settings(db_url, fake_apiserver, tmp_path, max_body_bytes=4 * MiB,
                                body_bytes_in_flight=6 * MiB, http_body_timeout_seconds=0.5)
    async with running_service(settings) as svc:
        reader1, writer1 = await post_headers(port_of(svc), "/v1/filter", 3 * MiB)
        await until(lambda: getattr(svc.app_state, "body_budget", None) is not None
                    and budget(svc).in_flight == 3 * MiB)
        reader2, writer2 = await post_headers(port_of(svc), "/v1/prioritize", 2 * MiB)
        status, body = await answer(reader2)
        assert status == 503 and body["error"]["code"] == "unavailable"
        assert "too many large request bodies" in body["error"]["message"]
        writer2.close()
        writer1.write(b" " * (3 * MiB))
        await writer1.drain()
        assert (await answer(reader1))[0] == 400
        writer1.close()
        await until(lambda: budget(svc).in_flight == 0)


async def test_with_tokens_a_body_is_read_only_for_a_known_token(rest: RunningService) -> None:
    """The answer comes before any of the declared 512 KiB is sent: nothing was read."""
    for extra in (b"", b"Authorization: Bearer not-a-token-0123456789\r\n",
                  b"Authorization: Basic eDp5\r\n"):
        reader, writer = await post_headers(port_of(rest), "/v1/ip", 512 << 10, extra)
        status, body = await answer(reader)
        writer.close()
        assert status == 401 and body["error"]["code"] == "unauthorized"
    # With the admin token the body is awaited, then judged by the route.
    token = ADMIN["Authorization"].encode()
    reader, writer = await post_headers(port_of(rest), "/v1/ip", 10,
                                        b"Authorization: %s\r\n" % token)
    writer.write(b'{"ips": 7}')
    await writer.drain()
    status, _ = await answer(reader)
    writer.close()
    assert status == 400  # galaxy's API judged it (its own status for a bad request)
    # The extender's verbs are never behind a token.
    bind = await rest.client.post("/v1/bind", json={"PodName": "p", "PodNamespace": "d",
                                                    "PodUID": "u", "Node": "n"})
    assert bind.status_code == 200


# --- a real process under the largest bodies each route takes -------------------------------

def manifest_memory_limit() -> int:
    docs = yaml.safe_load_all((ROOT / "manifests/deployment.yaml").read_text())
    (deployment,) = [d for d in docs if d and d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    value = container["resources"]["limits"]["memory"]
    assert value.endswith("Mi")
    return int(value[:-2]) * MiB


def vm(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(key)


def test_peak_memory_under_a_hostile_mix_stays_well_under_the_manifest_limit(
        db_url_sync: str, tmp_path: Path) -> None:
    """4 full-node filters of 31 MiB, 2 of them with a broken pod, 2 NodeNames bodies of
    10 MiB, 4 of 1 MiB of unknown names, 8 REST bodies of 1 MiB of empty objects: all at
    once. Before: one 63 MB body peaked at 395 MB, four at 759 MB."""
    limit = manifest_memory_limit()
    port = free_port()
    pools = tmp_path / "pools.json"
    pools.write_text('[{"routableSubnet": "10.0.0.0/16", "ips": ["10.128.0.1~10.128.255.253"]'
                     ', "subnet": "10.128.0.0/16", "gateway": "10.128.255.254"}]')
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPAM_")}
    env.update(IPAM_DATABASE_URL=db_url_sync, IPAM_CONTROLLERS_ENABLED="false",
               IPAM_PORT=str(port), IPAM_POOLS_FILE=str(pools), IPAM_LOG_LEVEL="WARNING",
               IPAM_DATA_DIR=str(tmp_path / "data"))
    pod = make_pod("mem-0", "bench")
    pod["metadata"]["uid"] = "uid-mem-0"
    nodes = [make_node(f"node-{i:05d}") for i in range(8400)]
    full = orjson.dumps({"Pod": pod, "Nodes": {"metadata": {}, "items": nodes},
                         "NodeNames": None})
    broken = full.replace(b'"uid":"uid-mem-0"', b'"uid":7', 1)
    del nodes
    names10 = orjson.dumps({"Pod": pod, "NodeNames": [f"n-{i:08d}" for i in range(800_000)]})
    names1 = orjson.dumps({"Pod": pod, "NodeNames": [f"n-{i:08d}" for i in range(76_000)]})
    rest = b'{"ips": [' + b"{}," * (MiB // 3 - 10) + b"{}]}"
    assert 30 * MiB < len(full) <= 32 * MiB and len(names1) < MiB < len(rest) + 64

    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ipam", "serve"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as http:
            for _ in range(1200):
                assert proc.poll() is None, log.read_text()
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            assert http.post("/v1/filter", content=names1).status_code == 200  # warm
        base = vm(proc.pid, "VmRSS")
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS

        async def mix() -> list[int]:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                         timeout=300) as client:
                calls = ([client.post("/v1/filter", content=full) for _ in range(2)]
                         + [client.post("/v1/prioritize", content=broken) for _ in range(2)]
                         + [client.post("/v1/filter", content=names10) for _ in range(2)]
                         + [client.post("/v1/filter", content=names1) for _ in range(4)]
                         + [client.post("/v1/ip", content=rest,
                                        headers={"Content-Type": "application/json"})
                            for _ in range(8)])
                return [r.status_code for r in await asyncio.gather(*calls)]

        statuses = asyncio.run(mix())
        peak = vm(proc.pid, "VmHWM")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert statuses == [200] * 2 + [400] * 2 + [413] * 2 + [200] * 4 + [400] * 8
    # What the requests added, and the whole process: with its ~105 MB here (~125 MB with
    # 5,000 nodes cached in a cluster), at most four fifths of the limit.
    assert peak - base <= 100 * MiB, (base >> 20, peak >> 20)
    assert peak <= limit * 4 // 5, (base >> 20, peak >> 20, limit >> 20)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
