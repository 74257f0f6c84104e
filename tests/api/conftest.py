"""The service under test: real uvicorn, real PostgreSQL, the fake API server, seed pools."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ipam.settings import Settings
from tests.conftest import FIXTURES, load_fixture
from tests.fakeapi.objects import make_node
from tests.fakeapi.server import FakeApiServer
from tests.service_harness import RunningService, running_service, wait_until

SEED_NODES = {"node-0": "10.10.100.10", "node-1": "10.10.100.11", "node-x": "10.20.0.5"}


def service_settings(db_url: str, fake: FakeApiServer, tmp_path: Path, **over: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url, "kube_api_url": fake.url, "data_dir": tmp_path,
        "pools_file": FIXTURES / "galaxy/floatingip-config.yaml",
        "catalog_refresh_seconds": 0.5, "kube_threads": 48,
        # Released addresses are free at once, as in galaxy: the tests of quarantine
        # (tests/k8s/test_quarantine_lifecycle.py) set a period of their own.
        "quarantine_seconds": 0,
    }
    values.update(over)
    return Settings(**values)


@pytest.fixture
async def service(db_url: str, fake_apiserver: FakeApiServer, tmp_path: Path
                  ) -> AsyncIterator[RunningService]:
    for name, ip in SEED_NODES.items():
        fake_apiserver.create("nodes", make_node(name, internal_ip=ip))
    async with running_service(service_settings(db_url, fake_apiserver, tmp_path)) as svc:
        await wait_until(lambda: svc.runtime.nodes.synced and len(svc.runtime.nodes) == 3)
        yield svc


@pytest.fixture
def seed_pod(fake_apiserver: FakeApiServer) -> dict[str, Any]:
    """The fixture's pod, created in the fake API server with the fixture's UID."""
    pod = copy.deepcopy(load_fixture("extender/filter-request-nodecache.json")["Pod"])
    return fake_apiserver.create("pods", pod)
