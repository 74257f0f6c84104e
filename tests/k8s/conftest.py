"""A running service with controllers on, against the fake API server and real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import SEED_NODES, service_settings
from tests.fakeapi.objects import make_node
from tests.fakeapi.server import FakeApiServer
from tests.service_harness import RunningService, running_service, wait_until

ServiceFactory = Callable[..., AbstractAsyncContextManager[RunningService]]

FAST = {
    "leader": {"renew_seconds": 0.2},
    # No grace for vanished pods (tests delete and expect prompt repair); a real one for
    # unbound pods, whose binds may be in flight while the reconciler runs.
    "reconciler": {"interval_seconds": 3600, "grace_seconds": 0, "unbound_grace_seconds": 30},
    "watch": {"backoff_seconds": [0.05, 0.1, 0.2]},
}


@pytest.fixture
def service_factory(db_url: str, fake_apiserver: FakeApiServer, tmp_path: Path
                    ) -> ServiceFactory:
    """Start a service (or several: replicas share the database) with fast controllers."""
    for name, ip in SEED_NODES.items():
        if fake_apiserver.get("nodes", name) is None:
            fake_apiserver.create("nodes", make_node(name, internal_ip=ip))

    def factory(**over: Any) -> AbstractAsyncContextManager[RunningService]:
        values = {**FAST, **over}
        return _started(service_settings(db_url, fake_apiserver, tmp_path, **values))

    return factory


class _started:
    def __init__(self, settings: Any) -> None:
        self.cm = running_service(settings)

    async def __aenter__(self) -> RunningService:
        svc = await self.cm.__aenter__()
        await wait_until(lambda: all(ok for name, (ok, _) in
                                     svc.runtime.readiness.conditions.items()
                                     if name.startswith("watch:"))
                         and len(svc.runtime.readiness.conditions) >= 2)
        return svc

    async def __aexit__(self, *exc: Any) -> None:
        await self.cm.__aexit__(*exc)


@pytest.fixture
async def controlled(service_factory: ServiceFactory) -> AsyncIterator[RunningService]:
    async with service_factory() as svc:
        await wait_until(lambda: svc.runtime.leadership.is_leader)
        yield svc
