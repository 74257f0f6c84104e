"""A real PostgreSQL for tests: the server at 127.0.0.1:5432 when it answers, else embedded.

The schema is migrated once into a template database; every test gets a fresh copy
(``CREATE DATABASE ... TEMPLATE``), so tests can commit, run concurrent transactions and
even hit the append-only audit trigger without cleaning up after each other.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import asyncpg

SERVER_URL_ENV = "IPAM_TEST_POSTGRES"  # e.g. postgresql://postgres@127.0.0.1:5432/postgres


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def server_dsn(tmp_root: Path) -> str:
    """A libpq DSN for an admin connection to some real PostgreSQL server."""
    if os.environ.get(SERVER_URL_ENV):
        return os.environ[SERVER_URL_ENV]
    if _port_open("127.0.0.1", 5432):
        return "postgresql://postgres@127.0.0.1:5432/postgres"
    from ipam.storage.embedded_postgres import start

    url = start(tmp_root / "embedded-pg", database="postgres")
    return url.replace("postgresql+asyncpg://", "postgresql://")


def asyncpg_url(dsn: str, database: str) -> str:
    """SQLAlchemy URL for ``database`` on the server of ``dsn``."""
    base, _, query = dsn.partition("?")
    base = base.rsplit("/", 1)[0]
    url = f"{base}/{database}".replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{url}?{query}" if query else url


async def _admin(dsn: str) -> asyncpg.Connection:
    base, _, query = dsn.partition("?")
    kwargs = {}
    if query.startswith("host="):
        kwargs["host"] = query.split("=", 1)[1]
    return await asyncpg.connect(base, **kwargs)


class DatabaseFactory:
    """Creates the migrated template once, then cheap copies of it."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.template = f"ipam_tpl_{uuid.uuid4().hex[:10]}"
        self.created: list[str] = []

    async def prepare(self) -> None:
        from ipam.storage.database import Database, migrate

        conn = await _admin(self.dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{self.template}"')
        finally:
            await conn.close()
        db = Database(asyncpg_url(self.dsn, self.template), pool_size=1, max_overflow=0)
        try:
            await migrate(db)
        finally:
            await db.dispose()

    async def create(self) -> str:
        name = f"ipam_t_{uuid.uuid4().hex[:12]}"
        conn = await _admin(self.dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        finally:
            await conn.close()
        self.created.append(name)
        return asyncpg_url(self.dsn, name)

    async def drop(self, url: str) -> None:
        name = url.split("?", maxsplit=1)[0].rsplit("/", 1)[1]
        conn = await _admin(self.dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    async def close(self) -> None:
        conn = await _admin(self.dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
        finally:
            await conn.close()
