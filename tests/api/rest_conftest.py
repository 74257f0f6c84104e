"""The REST API under test: the real app, real uvicorn and PostgreSQL, tokens from a file.

Test modules import the fixtures from here (``rest_fixture`` provides ``rest``).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter

from ipam.api import audit, cni, galaxy, operators
from ipam.app import create_app
from ipam.settings import Settings
from tests.conftest import FIXTURES, load_fixture
from tests.fakeapi.objects import make_node
from tests.fakeapi.server import FakeApiServer
from tests.service_harness import RunningService, running_service, wait_until

ADMIN_TOKEN = "admin-token-0123456789abcdef"
READ_TOKEN = "read-token-0123456789abcdef"
CNI_TOKEN = "cni-token-0123456789abcdef"
OTHER_ADMIN_TOKEN = "second-admin-0123456789abcdef"
SEED_NODES = {"node-0": "10.10.100.10", "node-1": "10.10.100.11", "node-x": "10.20.0.5"}
REST_ROUTERS: Sequence[APIRouter] = (operators.router, audit.router, cni.router, galaxy.router)


def token_lines() -> list[str]:
    """admin as a plain token, read as a bare digest, cni as sha256:<digest>."""
    return [
        "# name:role:secret",
        f"alice:admin:{ADMIN_TOKEN}",
        f"viewer:read:{hashlib.sha256(READ_TOKEN.encode()).hexdigest()}",
        f"node:cni:sha256:{hashlib.sha256(CNI_TOKEN.encode()).hexdigest()}",
        f"bob:admin:{OTHER_ADMIN_TOKEN}",
    ]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(ADMIN_TOKEN)
READ = bearer(READ_TOKEN)
CNI = bearer(CNI_TOKEN)


RestSettings = Settings


def rest_settings(db_url: str, fake: FakeApiServer, tmp_path: Path, **over: Any
                  ) -> RestSettings:
    tokens = tmp_path / "tokens"
    tokens.write_text("\n".join(token_lines()) + "\n")
    values: dict[str, Any] = {
        "database_url": db_url, "kube_api_url": fake.url, "data_dir": tmp_path,
        "pools_file": FIXTURES / "galaxy/floatingip-config.yaml",
        "catalog_refresh_seconds": 0.5, "kube_threads": 16, "auth_tokens_path": tokens,
        # Tests schedule through this port; a real one keeps the verbs on the TLS listener.
        "extender_on_api_port": True,
        # Released addresses are free at once, as in galaxy: the tests of quarantine set a
        # period of their own (tests/k8s/test_quarantine_lifecycle.py).
        "quarantine_seconds": 0,
    }
    values.update(over)
    return RestSettings(**values)


def rest_app(settings: Settings) -> Any:
    """The service's app; ``REST_ROUTERS`` are the routers it serves besides the extender."""
    return create_app(settings)


def running_rest_service(settings: Settings) -> AbstractAsyncContextManager[RunningService]:
    """The service as ``running_service`` starts it (the REST routers are part of the app)."""
    return running_service(settings)


@pytest.fixture(name="rest")
async def rest_fixture(db_url: str, fake_apiserver: FakeApiServer, tmp_path: Path
               ) -> AsyncIterator[RunningService]:
    """The service with the seed's pools, three nodes, and the token file of ``token_lines``."""
    for name, ip in SEED_NODES.items():
        fake_apiserver.create("nodes", make_node(name, internal_ip=ip))
    async with running_rest_service(rest_settings(db_url, fake_apiserver, tmp_path)) as svc:
        await wait_until(lambda: svc.runtime.nodes.synced and len(svc.runtime.nodes) == 3)
        yield svc


@pytest.fixture(name="rest_seed_pod")
def rest_seed_pod_fixture(fake_apiserver: FakeApiServer) -> dict[str, Any]:
    pod = copy.deepcopy(load_fixture("extender/filter-request-nodecache.json")["Pod"])
    return fake_apiserver.create("pods", pod)


async def bind(svc: RunningService, pod: dict[str, Any], node: str = "node-0") -> None:
    """Schedule ``pod`` through the extender's bind, as kube-scheduler does."""
    meta = pod["metadata"]
    resp = await svc.client.post("/v1/bind", json={
        "PodName": meta["name"], "PodNamespace": meta.get("namespace", "default"),
        "PodUID": meta["uid"], "Node": node})
    assert resp.status_code == 200 and resp.json() == {"Error": ""}, resp.text
