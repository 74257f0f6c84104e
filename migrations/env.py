"""Alembic environment: async, and reusable from code (``ipam migrate``, ``ipam serve``).

When the caller hands a connection in ``config.attributes["connection"]`` we migrate on it;
otherwise we connect to ``IPAM_DATABASE_URL`` (or ``-x url=...``).
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

config = context.config


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get(
        "IPAM_DATABASE_URL"
    )
    if not url:
        raise SystemExit("set IPAM_DATABASE_URL or pass -x url=postgresql+asyncpg://...")
    asyncio.run(_run_async(url))


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run()
