"""`ipam check` and `ipam check --repair` against real PostgreSQL and the fake API server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ipam.cli import app
from ipam.engine.pod import pod_facts
from ipam.services.allocation import Actor, Allocator
from ipam.services.pool_config import PoolConfigService
from ipam.settings import get_settings
from ipam.storage.database import Database
from tests.conftest import FIXTURES
from tests.fakeapi.objects import make_pod
from tests.fakeapi.server import FakeApiServer
from tests.services.helpers import routable


@pytest.fixture
def cli_env(db_url: str, fake_apiserver: FakeApiServer, tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {"IPAM_DATABASE_URL": db_url, "IPAM_KUBE_API_URL": fake_apiserver.url,
           "IPAM_DATA_DIR": str(tmp_path), "IPAM_RECONCILER__GRACE_SECONDS": "0",
           "IPAM_POOLS_FILE": str(FIXTURES / "galaxy/floatingip-config.yaml")}
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


async def invoke(env: dict[str, str], *args: str) -> tuple[int, str]:
    def run() -> tuple[int, str]:
        get_settings.cache_clear()
        result = CliRunner().invoke(app, list(args), env=env)
        return result.exit_code, result.output

    return await asyncio.to_thread(run)


async def test_check_reports_then_repair_fixes(
    cli_env: dict[str, str], db: Database, fake_apiserver: FakeApiServer, seed_config: object
) -> None:
    service = PoolConfigService(db)
    await service.apply(seed_config, actor=Actor("test"))  # type: ignore[arg-type]
    gone = make_pod("gone")
    gone["metadata"]["uid"] = "gone-uid"
    await Allocator(db).allocate(pod_facts(gone), routable(await service.current(), "10.10.100.1"),
                                 node="node-0", actor=Actor("test"))
    networks = {"k8s.v1.cni.cncf.io/networks": "galaxy-k8s-vlan"}
    fake_apiserver.create("pods", make_pod("no-resource", eni_ips=None, annotations=networks))

    code, out = await invoke(cli_env, "check", "-o", "json")
    assert code == 3, out
    report = json.loads(out)
    kinds = {(f["kind"], f["action"]) for f in report["findings"]}
    assert kinds == {("pod_gone", "none"), ("missing_resource", "none")}
    missing = next(f for f in report["findings"] if f["kind"] == "missing_resource")
    assert "requests no tke.cloud.tencent.com/eni-ip" in missing["detail"]
    assert len(await Allocator(db).pod_addresses("gone-uid")) == 1  # check changed nothing

    code, out = await invoke(cli_env, "check", "--repair")
    assert "pod_gone" in out and "released" in out
    assert await Allocator(db).pod_addresses("gone-uid") == []
    assert code == 3  # the missing resource is still there to fix by hand
