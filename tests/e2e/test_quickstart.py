"""README's quickstart for real: `ipam serve` with no database configured, then a restart; and
README's commands exactly as written, in a fresh virtual environment in a fresh clone."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.system_packages import command

ROOT = Path(__file__).parents[2]
SEED = ROOT / "tests/fixtures/galaxy/floatingip-config.yaml"


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


def wait_until_answers(url: str, alive: Callable[[], bool], timeout: float) -> None:
    """Until ``url`` answers 200; fails at once when ``alive()`` turns false (it exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert alive(), f"exited before {url} answered"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer 200 within {timeout:.0f} s")


def stop_embedded(pgdata: Path) -> None:
    """Stop an embedded server left running in ``pgdata`` (its postmaster's pid, no more)."""
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


class Service:
    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env, self.port = env, port
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        log = Path(self.env["IPAM_DATA_DIR"]).parent / "serve.log"
        with log.open("a") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "ipam", "serve"], env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT, text=True)
        proc = self.proc
        try:
            wait_until_answers(self.url("/healthz"), lambda: proc.poll() is None, 60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text()[-3000:]}") from None

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
    stop_embedded(tmp_path / "data" / "pgdata")


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


# -- README's commands, as a new user runs them ----------------------------------------------
def quickstart_commands() -> dict[str, str]:
    """The shell blocks of README's Quickstart by what they are for."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = [b.strip() for b in re.findall(r"```sh\n(.*?)```", section, re.S)]
    venv, serve, tests, try_it = blocks
    assert "venv" in venv and "ipam serve" in serve and "pytest" in tests, blocks
    return {"venv": venv, "serve": serve, "tests": tests, "try": try_it}


def test_ci_runs_the_readme_test_command() -> None:
    lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    commands = [line for line in lines if line and not line.startswith("#")]
    assert commands[-1] == quickstart_commands()["tests"]


def _family(pid: int) -> list[psutil.Process]:
    """The process and its descendants (bash may have exec'd into its last command)."""
    try:
        top = psutil.Process(pid)
        return [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _argv(process: psutil.Process) -> list[str]:
    try:
        return list(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_readme_commands_in_a_fresh_clone(tmp_path: Path) -> None:
    """`git clone` of this repository's HEAD, README's venv and serve commands verbatim (a
    non-editable install, run from the clone's root, where `python -m ipam` imports the
    source package), then README's `ipam pools import`. pip's cache is kept between runs."""
    git = command("git", "git")
    clone, data, port = tmp_path / "clone", tmp_path / "data", free_port()
    subprocess.run([git, "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    commands = quickstart_commands()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("IPAM_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(IPAM_DATA_DIR=str(data), IPAM_PORT=str(port), IPAM_HOST="127.0.0.1",
               PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR")
               or str(Path.home() / ".cache" / "pip"))
    # The interpreter running the tests is the `python3` a user would have.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log_path = tmp_path / "quickstart.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            ["bash", "-ec", f"{commands['venv']}\n{commands['serve']}"], cwd=clone, env=env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            wait_until_answers(f"http://127.0.0.1:{port}/healthz",
                               lambda: proc.poll() is None, 900)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log_path.read_text()[-4000:]}") from None
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{url}/v1/pools").json()["items"] == []
        ready = httpx.get(f"{url}/readyz").json()
        assert ready["checks"]["migrations"]["ok"] is True, ready

        # What ran is the wheel's install, not an editable one.
        site = next((clone / ".venv/lib").glob("python3*/site-packages"))
        assert (site / "ipam/migrations/env.py").is_file()
        assert not list(site.glob("__editable__*ipam*"))

        (import_line, _curl) = commands["try"].splitlines()
        imported = subprocess.run(
            ["bash", "-ec", f". .venv/bin/activate\n{import_line}"], cwd=clone, env=env,
            capture_output=True, text=True, timeout=120, check=False)
        assert imported.returncode == 0, imported.stdout + imported.stderr
        pools = httpx.get(f"{url}/v1/pools").json()["items"]
        assert [(p["name"], p["total"]) for p in pools] == [("10.11.128.0/21", 2045)]
    finally:
        # SIGTERM to `ipam serve` itself, as a user's Ctrl-C or a service manager would stop
        # it; the shell around it then exits with its status.
        serve = [p for p in _family(proc.pid) if _argv(p)[-3:] == ["-m", "ipam", "serve"]]
        for process in serve:
            process.send_signal(signal.SIGTERM)
        if not serve and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=60)
        left_running = (data / "pgdata" / "postmaster.pid").exists()
        stop_embedded(data / "pgdata")
    assert code == 0, log_path.read_text()[-4000:]
    assert not left_running, "the embedded PostgreSQL outlived `ipam serve`"
