"""`ipam serve` as a process: where it listens by default and how a bad start ends.

Without a token file the REST API is open, so it listens on 127.0.0.1 unless IPAM_HOST says
otherwise, and says so (issue 14, item 10). A bad IPAM_POOLS_FILE ends the start with one
error line naming the file and a non-zero exit, not a traceback (issue 13, item 9).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import FIXTURES


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(db_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPAM_")}
    env.update(IPAM_DATABASE_URL=db_url, IPAM_CONTROLLERS_ENABLED="false",
               IPAM_DATA_DIR=str(tmp_path / "data"), IPAM_LOG_JSON="false", **extra)
    return env


def _listening(pid: int, port: int) -> set[str]:
    return {c.laddr.ip for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


@pytest.mark.parametrize("tokens", [False, True], ids=["no-token-file", "token-file"])
def test_default_listen_address_follows_the_token_file(db_url_sync: str, tmp_path: Path,
                                                        tokens: bool) -> None:
    port = _free_port()
    env = _env(db_url_sync, tmp_path, IPAM_PORT=str(port))
    if tokens:
        (tmp_path / "tokens").write_text("ops:admin:0123456789abcdef0123\n")
        env["IPAM_AUTH_TOKENS_PATH"] = str(tmp_path / "tokens")
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ipam", "serve"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        for _ in range(1200):
            assert proc.poll() is None, log.read_text()
            if _listening(proc.pid, port):
                break
            time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        if tokens:
            assert _listening(proc.pid, port) == {"0.0.0.0"}
            assert "listens on" not in log.read_text()
        else:
            assert _listening(proc.pid, port) == {"127.0.0.1"}
            assert ("no token file (IPAM_AUTH_TOKENS_PATH): the REST API is open, so it "
                    "listens on 127.0.0.1 only") in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read it: No such file or directory"),
    ("[{", "not valid"),
    ('[{"subnet": "10.0.0.0/24", "ips": ["10.0.0.1"]}]',
     "entry 0, field 'routableSubnet': missing routableSubnet"),
    ('[{"routableSubnet": "10.1.0.0/24", "subnet": "10.0.0.0/24", "ips": ["10.0.0.1"], '
     '"vlan": ' + "9" * 5000 + "}]", "a number is too long: Exceeds the limit (4300 digits)"),
    (b"\xff\xfe not text", "cannot read it"),
], ids=["missing", "not-json", "bad-entry", "5000-digit-vlan", "not-utf8"])
def test_a_bad_pools_file_is_one_error_line_and_a_non_zero_exit(
        db_url_sync: str, tmp_path: Path, content: str | bytes | None, message: str) -> None:
    path = tmp_path / "pools.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    env = _env(db_url_sync, tmp_path, IPAM_PORT=str(_free_port()), IPAM_POOLS_FILE=str(path))
    done = subprocess.run([sys.executable, "-m", "ipam", "serve"], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(f"error: IPAM_POOLS_FILE {path}: ") and message in errors[0], (
        errors[0])
    assert done.stderr.strip().splitlines()[-1] == errors[0]


def test_the_seed_pools_file_still_starts(db_url_sync: str, tmp_path: Path) -> None:
    """The control: the same start with galaxy's ConfigMap serves."""
    port = _free_port()
    env = _env(db_url_sync, tmp_path, IPAM_PORT=str(port),
               IPAM_POOLS_FILE=str(FIXTURES / "galaxy/floatingip-config.yaml"))
    proc = subprocess.Popen([sys.executable, "-m", "ipam", "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(1200):
            assert proc.poll() is None
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        pools = httpx.get(f"http://127.0.0.1:{port}/v1/pools", timeout=10).json()["items"]
        assert [p["name"] for p in pools] == ["10.11.128.0/21"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def test_an_unreachable_database_at_start_is_one_error_line(tmp_path: Path) -> None:
    port = _free_port()  # nothing listens there
    env = _env(f"postgresql+asyncpg://ipam:secret@127.0.0.1:{port}/ipam", tmp_path,
               IPAM_PORT=str(_free_port()))
    done = subprocess.run([sys.executable, "-m", "ipam", "serve"], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr and "secret" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: cannot reach the database at 127.0.0.1:{port} (connection refused); check "
        "IPAM_DATABASE_URL")
