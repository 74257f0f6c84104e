"""The service's role ``ipam_app``: it can do the service's work, and cannot rewrite history.

A LOGIN role that is a member of ``ipam_app`` (as the service's role is in production) gets
"permission denied" for UPDATE, DELETE and TRUNCATE on ``audit`` from the grants of migration
0002 alone, before the append-only trigger is reached, while allocation, release, config
import and reading the audit trail all work.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from ipam.engine.pool_config import parse_pool_config
from ipam.services.allocation import Actor, Allocator
from ipam.services.pool_config import PoolConfigService
from ipam.storage.audit_repository import AuditFilter
from ipam.storage.database import Database, head_revision, migrate
from ipam.storage.records import AuditEntry
from tests.conftest import FIXTURES
from tests.pg import DatabaseFactory, asyncpg_url
from tests.services.helpers import make_pod, routable

APP_ROLE = "ipam_app"
CONFIG = [{"routableSubnet": "10.10.100.0/24", "ips": ["10.70.0.1~10.70.0.9"],
           "subnet": "10.70.0.0/24", "gateway": "10.70.0.254", "vlan": 3}]


@pytest.fixture
async def member(db: Database, db_url: str) -> AsyncIterator[Database]:
    """A database handle logged in as a fresh LOGIN member of ipam_app."""
    name = f"ipam_svc_{uuid.uuid4().hex[:10]}"
    async with db.engine.begin() as conn:
        await conn.execute(text(f'CREATE ROLE "{name}" LOGIN IN ROLE {APP_ROLE}'))
    url = make_url(db_url).set(username=name).render_as_string(hide_password=False)
    handle = Database(url, pool_size=2, max_overflow=2)
    try:
        yield handle
    finally:
        await handle.dispose()
        async with db.engine.begin() as conn:
            await conn.execute(text(f'DROP ROLE "{name}"'))


async def test_the_app_role_exists_without_login_and_owns_nothing(db: Database) -> None:
    async with db.engine.connect() as conn:
        role = (await conn.execute(text(
            "SELECT rolcanlogin, rolsuper FROM pg_roles WHERE rolname = :r"),
            {"r": APP_ROLE})).one()
        assert tuple(role) == (False, False)
        granted = dict((await conn.execute(text(
            "SELECT p, has_table_privilege(:r, 'audit', p) FROM unnest(ARRAY["
            "'SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS p"),
            {"r": APP_ROLE})).all())
        owners = {r[0] for r in await conn.execute(text(
            "SELECT tableowner FROM pg_tables WHERE schemaname = current_schema()"))}
    assert granted == {"SELECT": True, "INSERT": True, "UPDATE": False, "DELETE": False,
                       "TRUNCATE": False}
    assert APP_ROLE not in owners


@pytest.mark.parametrize("statement", [
    "UPDATE audit SET actor = 'forged'",
    "DELETE FROM audit",
    "TRUNCATE audit",
])
async def test_the_service_role_cannot_change_or_delete_audit_rows(
    member: Database, db: Database, statement: str
) -> None:
    async with member.transaction() as store:
        await store.audit.record(AuditEntry(actor="a", action="allocate", reason="x"))
    with pytest.raises(DBAPIError, match="permission denied for table audit"):
        async with member.engine.begin() as conn:
            await conn.execute(text(statement))
    async with member.transaction() as store:
        [row] = await store.audit.query(AuditFilter(), 10)
    assert row.entry.actor == "a"


@pytest.mark.parametrize("statement", [
    "ALTER TABLE audit DISABLE TRIGGER ALL",
    "ALTER TABLE audit DISABLE TRIGGER audit_no_update_delete",
    "ALTER TABLE audit ADD COLUMN forged text",
    "ALTER TABLE audit OWNER TO CURRENT_USER",
    "DROP TRIGGER audit_no_truncate ON audit",
    "DROP TABLE audit",
    "CREATE OR REPLACE FUNCTION audit_is_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RETURN NEW; END $$",
])
async def test_the_service_role_cannot_alter_the_audit_table_or_its_triggers(
    member: Database, statement: str
) -> None:
    with pytest.raises(DBAPIError, match=r"must be owner|permission denied"):
        async with member.engine.begin() as conn:
            await conn.execute(text(statement))
    async with member.engine.connect() as conn:
        enabled = (await conn.execute(text(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'audit'::regclass "
            "AND NOT tgisinternal AND tgenabled = 'O'"))).scalar_one()
    assert enabled == 2


async def test_the_service_role_can_do_the_services_work(member: Database) -> None:
    assert await member.schema_revision() == head_revision()
    await migrate(member)  # at head: a replica starting as the service role finds nothing to do
    config = parse_pool_config(CONFIG)
    diff = await PoolConfigService(member).apply(config, actor=Actor("test"))
    assert diff.added == ["10.70.0.0/24"]
    allocator = Allocator(member, chunk=4)
    pools = routable(await PoolConfigService(member).current(), "10.10.100.10")
    pods = [make_pod(f"p{i}") for i in range(6)]  # crosses a materialisation chunk
    for pod in pods:
        await allocator.allocate(pod, pools, node="n", actor=Actor("test"))
    released = await allocator.release_pod(pods[0].uid, keep=False, actor=Actor("test"),
                                           reason="gone")
    assert [str(r.address) for r in released] == ["10.70.0.1"]
    shrink = parse_pool_config([dict(CONFIG[0], ips=["10.70.0.2~10.70.0.8"])])
    await PoolConfigService(member).apply(shrink, actor=Actor("test"))  # deletes free rows
    async with member.engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO named_pools (name, size) VALUES ('gp', 2) "
            "ON CONFLICT (name) DO UPDATE SET size = 3"))
        await conn.execute(text("DELETE FROM named_pools"))
    async with member.transaction() as store:
        assert len(await store.audit.query(AuditFilter(action="allocate"), 100)) == 6


# --- the shipped setup: `ipam migrate` as the owner, `ipam serve` as a member of ipam_app ----

def _ipam(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ipam", *args], env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def two_roles(db_factory: DatabaseFactory) -> Iterator[tuple[str, str]]:
    """An empty database owned by a fresh owner role, and a fresh LOGIN member of ipam_app:
    (owner URL, serving URL)."""
    tag = uuid.uuid4().hex[:10]
    owner, member, name = f"ipam_owner_{tag}", f"ipam_svc_{tag}", f"ipam_roles_{tag}"

    async def admin(*statements: str) -> None:
        conn = await asyncpg.connect(db_factory.dsn)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE ROLE "{owner}" LOGIN', f'CREATE ROLE "{member}" LOGIN IN ROLE '
                      f"{APP_ROLE}", f'CREATE DATABASE "{name}" OWNER "{owner}"'))
    base = make_url(asyncpg_url(db_factory.dsn, name))
    try:
        yield (base.set(username=owner).render_as_string(hide_password=False),
               base.set(username=member).render_as_string(hide_password=False))
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                          f'DROP ROLE IF EXISTS "{member}"', f'DROP ROLE IF EXISTS "{owner}"'))


def test_migrate_as_the_owner_then_serve_as_a_role_that_owns_nothing(
        two_roles: tuple[str, str], tmp_path: Path) -> None:
    owner_url, serving_url = two_roles
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPAM_")}
    port = _free_port()
    env.update(IPAM_DATABASE_URL=serving_url, IPAM_CONTROLLERS_ENABLED="false",
               IPAM_DATA_DIR=str(tmp_path / "data"), IPAM_PORT=str(port), IPAM_LOG_JSON="false",
               IPAM_POOLS_FILE=str(FIXTURES / "galaxy/floatingip-config.yaml"))
    # The serving role never migrates: on an empty database it says what to run and exits.
    early = _ipam(dict(env, IPAM_SCHEMA_WAIT_SECONDS="0"), "serve")
    assert early.returncode == 4, early.stderr
    last = early.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the database schema is at revision none") and (
        "run `ipam migrate`" in last), early.stderr
    assert "Traceback" not in early.stderr
    # `ipam migrate` connects as the owner (IPAM_MIGRATE_DATABASE_URL), not as the server.
    migrated = _ipam(dict(env, IPAM_MIGRATE_DATABASE_URL=owner_url), "migrate")
    assert migrated.returncode == 0, migrated.stderr
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ipam", "serve"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for _ in range(1200):
                assert proc.poll() is None, log.read_text()
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            pools = http.get("/v1/pools").json()["items"]  # the pools file went in as the app
            assert [p["name"] for p in pools] == ["10.11.128.0/21"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0

    async def as_server() -> tuple[set[str], list[str]]:
        conn = await asyncpg.connect(serving_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            owners = {r[0] for r in await conn.fetch(
                "SELECT tableowner FROM pg_tables WHERE schemaname = current_schema()")}
            refused = []
            for statement in ("ALTER TABLE audit DISABLE TRIGGER ALL", "UPDATE audit SET "
                              "actor = 'forged'", "DELETE FROM audit", "TRUNCATE audit"):
                try:
                    await conn.execute(statement)
                except (asyncpg.InsufficientPrivilegeError, asyncpg.exceptions.
                        InvalidGrantOperationError) as exc:
                    refused.append(type(exc).__name__)
            assert await conn.fetchval("SELECT count(*) FROM audit") > 0
            return owners, refused
        finally:
            await conn.close()

    owners, refused = asyncio.run(as_server())
    owner_role = make_url(owner_url).username
    assert owners == {owner_role}
    assert refused == ["InsufficientPrivilegeError"] * 4
