"""The service's role ``ipam_app``: it can do the service's work, and cannot rewrite history.

A LOGIN role that is a member of ``ipam_app`` (as the service's role is in production) gets
"permission denied" for UPDATE, DELETE and TRUNCATE on ``audit`` from the grants of migration
0002 alone, before the append-only trigger is reached, while allocation, release, config
import and reading the audit trail all work.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

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
