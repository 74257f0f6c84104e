"""README's quickstart for real: `ipam serve` with no database configured, then a restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

SEED = Path(__file__).parents[1] / "fixtures/galaxy/floatingip-config.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPAM_")}
    env.update(IPAM_DATA_DIR=str(data_dir), IPAM_PORT=str(port), IPAM_HOST="127.0.0.1")
    return env


def ipam(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ipam", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


class Service:
    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env, self.port = env, port
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        log = Path(self.env["IPAM_DATA_DIR"]).parent / "serve.log"
        with log.open("a") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "ipam", "serve"], env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()
            try:
                if httpx.get(self.url("/healthz"), timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError("service did not answer /healthz within 60 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
            assert self.proc.returncode == 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    port = free_port()
    svc = Service(env_for(tmp_path / "data", port), port)
    yield svc
    svc.stop()
    # The embedded server outlives `ipam serve` only until the last handle goes; stop it.
    pgdata = tmp_path / "data" / "pgdata"
    if (pgdata / "postmaster.pid").exists():
        subprocess.run(["pkill", "-f", "--", f"-D {pgdata}"], check=False)


def test_serve_without_database_then_restart_keeps_data(service: Service) -> None:
    service.start()
    assert httpx.get(service.url("/healthz")).json() == {"status": "ok"}
    ready = httpx.get(service.url("/readyz"))
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["migrations"]["ok"] is True

    imported = ipam("pools", "import", str(SEED), env=service.env)
    assert imported.returncode == 0, imported.stderr
    assert '"added": [\n    "10.11.128.0/21"' in imported.stdout

    service.stop()
    service.start()
    pools = httpx.get(service.url("/v1/pools")).json()["items"]
    assert [(p["name"], p["total"], p["vlan"]) for p in pools] == [("10.11.128.0/21", 2045, 1200)]

    again = ipam("pools", "import", str(SEED), env=service.env)
    assert again.returncode == 0 and '"empty": true' in again.stdout


def test_bad_pool_file_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('[{"routableSubnet":"10.10.100.0/24","ips":["10.11.128.0/21"],'
                   '"subnet":"10.11.128.0/21","vlan":1200}]')
    result = ipam("pools", "import", str(bad), env=env_for(tmp_path / "data", free_port()))
    assert result.returncode == 2
    assert "entry 0, field 'ips[0]'" in result.stderr and "is a CIDR" in result.stderr
    assert "Traceback" not in result.stderr
