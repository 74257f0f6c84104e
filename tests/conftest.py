"""Shared fixtures: a real PostgreSQL per test, services wired to it, the seed's fixtures."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ipam.engine.pool_config import PoolConfig, load_document, parse_pool_config
from ipam.services.allocation import Actor, Allocator
from ipam.services.pool_config import PoolConfigService
from ipam.storage.database import Database
from tests.pg import DatabaseFactory, server_dsn

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def seed_config() -> PoolConfig:
    text = (FIXTURES / "galaxy/floatingip-config.yaml").read_text()
    return parse_pool_config(load_document(text))


def load_fixture(name: str) -> dict[str, object]:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="session")
async def db_factory(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DatabaseFactory]:
    factory = DatabaseFactory(server_dsn(tmp_path_factory.mktemp("pg")))
    await factory.prepare()
    yield factory
    await factory.close()


@pytest.fixture
async def db_url(db_factory: DatabaseFactory) -> AsyncIterator[str]:
    url = await db_factory.create()
    yield url
    await db_factory.drop(url)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url, pool_size=20, max_overflow=50)
    yield database
    await database.dispose()


@pytest.fixture
def allocator(db: Database) -> Allocator:
    return Allocator(db)


@pytest.fixture
def pool_service(db: Database) -> PoolConfigService:
    return PoolConfigService(db)


@pytest.fixture
def actor() -> Actor:
    return Actor("test", request_id="req-test")


from tests.fakeapi.fixtures import fake_apiserver, kube_config  # noqa: E402,F401


@pytest.fixture
def db_url_sync(db_factory: DatabaseFactory) -> Iterator[str]:
    """A fresh database for tests that are not async (subprocess-driven ones)."""
    import asyncio

    url = asyncio.run(db_factory.create())
    yield url
    asyncio.run(db_factory.drop(url))
