"""Two replicas against one PostgreSQL, binds split between them at random: no duplicates."""

from __future__ import annotations

import asyncio
import json
import random

from ipam.engine.pool_config import parse_pool_config
from ipam.services.allocation import Actor
from tests.api.test_extender import bind_body, filter_body, post
from tests.fakeapi.objects import make_pod
from tests.fakeapi.server import FakeApiServer
from tests.k8s.conftest import ServiceFactory
from tests.k8s.test_controllers import rows


async def test_binds_split_across_two_replicas(service_factory: ServiceFactory,
                                               fake_apiserver: FakeApiServer) -> None:
    rng = random.Random(7)
    async with service_factory() as a, service_factory() as b:
        # A small pool: 150 pods compete for 120 addresses through both replicas.
        await a.runtime.pools.apply(parse_pool_config([{
            "routableSubnet": "10.10.100.0/24", "ips": ["10.11.128.1~10.11.128.120"],
            "subnet": "10.11.128.0/21", "gateway": "10.11.135.254", "vlan": 1200}]),
            actor=Actor("test"))
        for svc in (a, b):
            await svc.runtime.catalog.refresh(svc.runtime.db)
        pods = [fake_apiserver.create("pods", make_pod(f"split-{i}")) for i in range(150)]

        async def schedule(pod: dict[str, object]) -> str:
            svc = rng.choice((a, b))
            await post(svc, "filter", filter_body(pod, ["node-0", "node-1"]))  # type: ignore[arg-type]
            other = rng.choice((a, b))  # filter and bind may even reach different replicas
            return str((await post(other, "bind", bind_body(pod, "node-0"))).json()["Error"])  # type: ignore[arg-type]

        errors = await asyncio.gather(*(schedule(p) for p in pods))
        bound = [p for p, e in zip(pods, errors, strict=True) if not e]
        assert len(bound) == 120
        assert all("exhausted" in e for e in errors if e)
        annotated = []
        for pod in bound:
            got = fake_apiserver.get("pods", pod["metadata"]["name"], namespace="default")
            ipinfos = json.loads(got["metadata"]["annotations"]["k8s.v1.cni.galaxy.io/args"])
            annotated.append(ipinfos["common"]["ipinfos"][0]["ip"])
        assert len(set(annotated)) == 120
        assert len(await rows(a)) == 120
