"""`ipam serve` with IPAM_EXTENDER_PORT: the extender answers on its own listener only, the
REST API stays on the main port, and SIGTERM stops both."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx

from tests.conftest import FIXTURES
from tests.e2e.test_quickstart import Service, env_for, free_port, wait_until_answers


def test_extender_on_its_own_port(db_url_sync: str, tmp_path: Path) -> None:
    port, extender_port = free_port(), free_port()
    env = env_for(tmp_path / "data", port)
    env.update(IPAM_DATABASE_URL=db_url_sync, IPAM_EXTENDER_PORT=str(extender_port),
               IPAM_EXTENDER_HOST="127.0.0.1", IPAM_CONTROLLERS_ENABLED="false",
               IPAM_POOLS_FILE=str(FIXTURES / "galaxy/floatingip-config.yaml"))
    svc = Service(env, port)
    svc.start()
    try:
        # The extender listener starts right after the main one is up: wait for it too.
        proc = svc.proc
        assert proc is not None
        wait_until_answers(f"http://127.0.0.1:{extender_port}/healthz",
                           lambda: proc.poll() is None, 30)
        body = (FIXTURES / "extender/filter-request-fullnodes.json").read_bytes()
        on_extender = httpx.post(f"http://127.0.0.1:{extender_port}/v1/filter", content=body)
        assert on_extender.status_code == 200
        assert [n["metadata"]["name"] for n in on_extender.json()["Nodes"]["items"]] == [
            "node-0", "node-1"]
        on_main = httpx.post(svc.url("/v1/filter"), content=body)
        assert on_main.status_code == 404
        assert on_main.json()["error"]["code"] == "route_not_found"
        pools = httpx.get(svc.url("/v1/pools")).json()["items"]
        assert [p["name"] for p in pools] == ["10.11.128.0/21"]
        assert json.loads(httpx.get(f"http://127.0.0.1:{extender_port}/healthz").text) == {
            "status": "ok"}
    finally:
        assert svc.proc is not None
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(timeout=30) == 0
