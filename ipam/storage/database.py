"""Connections, the unit of work, and schema migration.

A use case runs inside ``async with db.transaction() as store:``; the block commits when it
ends cleanly and rolls back when it raises, so repositories and services never commit.
Connection failures surface as ``Unavailable`` (503 / extender Error), never as a 500.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ipam.errors import InvalidInput, Unavailable
from ipam.storage.address_query import NamedPoolQuery
from ipam.storage.address_repository import AddressRepository
from ipam.storage.audit_repository import AuditRepository
from ipam.storage.locks import Locks
from ipam.storage.pool_repository import PoolRepository


@dataclass(slots=True)
class Store:
    """The repositories of one transaction."""

    conn: AsyncConnection
    addresses: AddressRepository
    pools: PoolRepository
    audit: AuditRepository
    locks: Locks
    named_pools: NamedPoolQuery


#: SQLSTATE classes that mean "the server is not there for us right now": connection
#: exception, insufficient resources, operator intervention (shutdown, cannot connect now).
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57")


def _is_connection_error(exc: BaseException) -> bool:
    """Walk the cause chain: a lost or refused connection, whatever layer reported it."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, OSError | ConnectionError | asyncio.TimeoutError | InterfaceError):
            return True
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        state = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if isinstance(state, str) and state[:2] in _UNAVAILABLE_SQLSTATE_CLASSES:
            return True
        if type(seen).__module__.startswith("asyncpg") and "Connect" in type(seen).__name__:
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


def _sqlstate(exc: BaseException) -> str:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        state = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if isinstance(state, str):
            return state
        seen = getattr(seen, "orig", None) or seen.__cause__
    return ""


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


class Database:
    """One engine (connection pool) per process; ``transaction()`` per use case."""

    def __init__(self, url: str, *, pool_size: int = 10, max_overflow: int = 10,
                 echo: bool = False) -> None:
        self.url = url
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            # No ping per checkout: it cost a BEGIN + SELECT 1 + ROLLBACK round trip set on
            # every transaction (10% of the bind path's CPU); a dead connection fails its
            # statement instead, which maps to Unavailable and the scheduler retries.
            pool_pre_ping=False,
            pool_recycle=300,
            pool_timeout=10,
            echo=echo,
            connect_args={"timeout": 5, "command_timeout": 30},
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Store]:
        try:
            async with self.engine.begin() as conn:
                yield Store(conn, AddressRepository(conn), PoolRepository(conn),
                            AuditRepository(conn), Locks(conn), NamedPoolQuery(conn))
        except (TimeoutError, OperationalError, InterfaceError, OSError, ConnectionError) as exc:
            raise Unavailable(f"database unavailable: {type(exc).__name__}") from exc
        except DBAPIError as exc:
            if _is_connection_error(exc):
                raise Unavailable(f"database unavailable: {_first_line(exc.orig or exc)}"
                                  ) from exc
            if _sqlstate(exc).startswith("22"):
                # Data exception: a value PostgreSQL cannot take (a NUL character, text where
                # an address belongs). The input is wrong, not the service.
                raise InvalidInput("a value was not accepted by the database: "
                                   f"{_first_line(exc.orig or exc)}") from exc
            raise

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def schema_revision(self) -> str | None:
        async with self.engine.connect() as conn:
            exists = await conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
            if not exists:
                return None
            value = await conn.scalar(text("SELECT version_num FROM alembic_version"))
            return str(value) if value is not None else None

    def connections_in_use(self) -> int:
        checked = getattr(self.engine.pool, "checkedout", None)
        return int(checked()) if callable(checked) else 0

    async def dispose(self) -> None:
        await self.engine.dispose()


def _alembic_config(connection: object | None = None) -> object:
    from alembic.config import Config

    location = Path(str(resources.files("ipam.migrations")))
    cfg = Config()
    cfg.set_main_option("script_location", str(location))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def head_revision() -> str:
    """The newest migration shipped with this code (read once: /readyz asks every probe)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config())  # type: ignore[arg-type]
    head = script.get_current_head()
    assert head is not None
    return head


async def migrate(db: Database, revision: str = "head", *, down: bool = False) -> None:
    """Apply migrations up to ``revision`` (or back to it with ``down``).

    Safe to run on every start and from many replicas at once: one migrates, the others wait
    on the advisory lock and then find nothing to do.
    """
    from alembic import command

    def _upgrade(sync_conn: object) -> None:
        step = command.downgrade if down else command.upgrade
        step(_alembic_config(sync_conn), revision)  # type: ignore[arg-type]

    async with db.engine.connect() as conn:
        # One migrator at a time when several replicas start together.
        await conn.execute(text("SELECT pg_advisory_lock(hashtext('ipam.migrate'))"))
        try:
            await conn.run_sync(_upgrade)
            await conn.commit()
        finally:
            await conn.rollback()  # a failed migration leaves the transaction aborted
            await conn.execute(text("SELECT pg_advisory_unlock(hashtext('ipam.migrate'))"))
            await conn.commit()
