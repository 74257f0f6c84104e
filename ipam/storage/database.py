"""Connections, the unit of work, and schema migration.

A use case runs inside ``async with db.transaction() as store:``; the block commits when it
ends cleanly and rolls back when it raises, so repositories and services never commit.
Connection failures surface as ``Unavailable`` (503 / extender Error), never as a 500.

The unit of work also records what changed: a use case tells the ``Store`` about each
address row it changed (``store.changed``) and each audit row it owes (``store.log``). The
audit rows are written in one statement just before COMMIT, in this transaction; the
process's listeners (``Database.listeners``: pool usage caches, metrics, the change feed)
hear of the address changes only after COMMIT succeeded, and never of a rolled-back one.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ipam.errors import InvalidInput, Unavailable
from ipam.storage.address_query import NamedPoolQuery
from ipam.storage.address_repository import AddressRepository
from ipam.storage.audit_repository import AuditRepository
from ipam.storage.locks import CONFIG_LOCK, Locks
from ipam.storage.pool_repository import PoolRepository
from ipam.storage.records import AddressRecord, AuditEntry
from ipam.storage.sql import AsyncpgSql, Sql

log = logging.getLogger(__name__)


#: Told of each committed change of an address row: (before, after); ``None`` for no row.
ChangeListener = Callable[[AddressRecord | None, AddressRecord | None], None]
Change = tuple[AddressRecord | None, AddressRecord | None]


@dataclass(slots=True)
class Store:
    """The repositories of one transaction, and the changes it will commit."""

    sql: Sql
    addresses: AddressRepository
    pools: PoolRepository
    audit: AuditRepository
    locks: Locks
    named_pools: NamedPoolQuery
    #: ``False`` for ``single_statement``: no transaction to write audit rows in.
    transactional: bool = True
    _entries: list[AuditEntry] = field(default_factory=list)
    _changes: list[Change] = field(default_factory=list)

    def log(self, *entries: AuditEntry) -> None:
        """Audit rows of this transaction, written just before it commits."""
        if entries and not self.transactional:
            raise RuntimeError("audit rows need a transaction (db.transaction())")
        self._entries.extend(entries)

    def changed(self, before: AddressRecord | None, after: AddressRecord | None,
                entry: AuditEntry) -> None:
        """An address row changed: its audit row goes with this transaction, and the
        listeners hear of the change once it has committed."""
        self.log(entry)
        self._changes.append((before, after))

    def changed_and_logged(self, before: AddressRecord | None, after: AddressRecord | None
                           ) -> None:
        """A change whose statement wrote its own audit row (the common bind,
        ``AddressRepository.held_or_take``): listeners only."""
        self._changes.append((before, after))

    async def flush_audit(self) -> None:
        """Write the logged audit rows (one statement); the unit of work calls it."""
        entries, self._entries = self._entries, []
        await self.audit.record(*entries)

    @property
    def changes(self) -> list[Change]:
        return list(self._changes)


#: SQLSTATE classes that mean "the server is not there for us right now": connection
#: exception, insufficient resources, operator intervention (shutdown, cannot connect now).
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57")


def _is_connection_error(exc: BaseException) -> bool:
    """Walk the cause chain: a lost or refused connection, whatever layer reported it."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, OSError | ConnectionError | asyncio.TimeoutError | InterfaceError
                      | asyncpg.InterfaceError | asyncpg.ConnectionDoesNotExistError
                      # the protocol lost its footing (e.g. a FATAL from a killed backend)
                      | asyncpg.InternalClientError):
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


def _is_database_error(exc: BaseException) -> bool:
    """Raised by SQLAlchemy or by asyncpg (statements run on the driver connection)."""
    return isinstance(exc, DBAPIError) or type(exc).__module__.startswith("asyncpg")


def _orig(exc: BaseException) -> BaseException:
    return getattr(exc, "orig", None) or exc


def _needs_discarding(exc: BaseException, driver: Any) -> bool:
    return (_is_connection_error(exc) or isinstance(exc, asyncio.CancelledError)
            or bool(driver.is_closed()))


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


@contextlib.contextmanager
def _translated_errors(*, data_errors: bool) -> Iterator[None]:
    """Database failures as our errors: a lost or refused connection is ``Unavailable``
    (503, extender Error); with ``data_errors``, a value PostgreSQL cannot take (a NUL
    character, text where an address belongs) is ``InvalidInput``: the input is wrong, not
    the service."""
    try:
        yield
    except PoolTimeout as exc:
        raise Unavailable("database unavailable: every pooled connection is busy (pool "
                          "timeout); retry") from exc
    except (TimeoutError, OperationalError, InterfaceError, OSError, ConnectionError) as exc:
        raise Unavailable(f"database unavailable: {type(exc).__name__}") from exc
    except Exception as exc:
        if not _is_database_error(exc):
            raise
        if _is_connection_error(exc):
            raise Unavailable(f"database unavailable: {_first_line(_orig(exc))}") from exc
        if data_errors and _sqlstate(exc).startswith("22"):
            raise InvalidInput("a value was not accepted by the database: "
                               f"{_first_line(_orig(exc))}") from exc
        raise


async def _driver(conn: AsyncConnection) -> Any:
    """The asyncpg connection under a pooled SQLAlchemy one."""
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None, "the pool handed out a closed connection"
    return driver


class HeldRow(NamedTuple):
    """An allocated or kept row as the reconciler surveys it: text, numbers and times, no
    ``ipaddress`` objects (100,000 full records took ~1.5 s and ~120 MB at every election)."""

    address: str
    state: str
    owner_key: str | None
    policy: str | None
    pod_namespace: str | None
    pod_name: str | None
    pod_uid: str | None
    kept_ttl_seconds: int | None
    kept_since: datetime | None
    updated_at: datetime


_HELD_ROWS = (
    "SELECT host(address), state, owner_key, policy, pod_namespace, pod_name, pod_uid, "
    "kept_ttl_seconds, kept_since, updated_at FROM addresses "
    "WHERE state IN ('allocated', 'kept') ORDER BY address"
)


class Snapshot:
    """Reads inside one read-only REPEATABLE READ transaction (``Database.snapshot``)."""

    def __init__(self, driver: Any) -> None:
        self._driver = driver

    async def now(self) -> datetime:
        """The database's clock; as the first statement, it also fixes the snapshot."""
        value: datetime = await self._driver.fetchval("SELECT now()")
        return value

    async def held_rows(self, batch: int = 2000) -> AsyncIterator[list[HeldRow]]:
        """Every allocated or kept row in address order, ``batch`` rows at a time through a
        server-side cursor: memory stays one batch, however many rows there are."""
        cursor = await self._driver.cursor(_HELD_ROWS)
        while rows := await cursor.fetch(batch):
            yield [HeldRow._make(r) for r in rows]


class Database:
    """One engine (connection pool) per process; ``transaction()`` per use case."""

    def __init__(self, url: str, *, pool_size: int = 10, max_overflow: int = 10,
                 pool_timeout: float = 10.0, echo: bool = False) -> None:
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
            # Waiting longer for a connection than kube-scheduler waits for us (5 s) only
            # queues work nobody will read; past it the request is a 503 / extender Error.
            pool_timeout=pool_timeout,
            echo=echo,
            connect_args={"timeout": 5, "command_timeout": 30},
        )
        #: Told of every address change this process commits, after the COMMIT.
        self.listeners: list[ChangeListener] = []

    def transaction(self, *, config_shared: bool = False
                    ) -> contextlib.AbstractAsyncContextManager[Store]:
        """A transaction on the pooled connection's asyncpg connection itself.

        SQLAlchemy lends the connection (pool, recycling, invalidation); the statements go to
        asyncpg directly, which costs a quarter of the CPU per statement (see storage.sql).
        ``config_shared`` takes the pool-config lock (storage.locks) in the BEGIN's round
        trip: every allocation needs it, and on loopback each round trip costs ~0.1 ms of CPU.
        """
        begin = "BEGIN"
        if config_shared:
            begin += f"; SELECT pg_advisory_xact_lock_shared({CONFIG_LOCK})"
        return self._store(begin)

    def single_statement(self) -> contextlib.AbstractAsyncContextManager[Store]:
        """Repositories without BEGIN/COMMIT: each statement is a transaction of its own.
        For work that is one statement (the filter's read, the common bind), where BEGIN and
        COMMIT would be two of three round trips."""
        return self._store(None)

    @asynccontextmanager
    async def _store(self, begin: str | None) -> AsyncIterator[Store]:
        with _translated_errors(data_errors=True):
            async with self.engine.connect() as conn:
                driver = await _driver(conn)
                try:
                    if begin is not None:
                        await driver.execute(begin)
                    store = Store(sql := AsyncpgSql(driver), AddressRepository(sql),
                                  PoolRepository(sql), AuditRepository(sql), Locks(sql),
                                  NamedPoolQuery(sql), transactional=begin is not None)
                    try:
                        yield store
                        await store.flush_audit()
                    except BaseException as exc:
                        if begin is not None and not _needs_discarding(exc, driver):
                            await driver.execute("ROLLBACK")
                        raise
                    if begin is not None:
                        await driver.execute("COMMIT")
                except BaseException as exc:
                    if _needs_discarding(exc, driver):
                        # Never hand a dead connection, or one stopped mid-statement, to the
                        # next transaction.
                        await conn.invalidate()
                    raise
        self._announce(store.changes)

    def _announce(self, changes: list[Change]) -> None:
        """Committed changes to the listeners; one that fails is logged and skipped: the
        change is in the database whatever a cache makes of it."""
        for before, after in changes:
            for listener in self.listeners:
                try:
                    listener(before, after)
                except Exception:
                    log.exception("a change listener failed (%r)", listener)

    @asynccontextmanager
    async def _raw(self) -> AsyncIterator[Any]:
        """A pooled connection's asyncpg connection, for statements outside a transaction. A
        failure discards the connection instead of handing it back: no SQLAlchemy statement
        saw it break."""
        async with self.engine.connect() as conn:
            driver = await _driver(conn)
            try:
                yield driver
            except BaseException:
                await conn.invalidate()
                raise

    async def ping(self) -> bool:
        try:
            async with self._raw() as driver:
                await driver.fetchval("SELECT 1")
            return True
        except Exception:
            return False

    async def schema_revision(self) -> str | None:
        """On the driver connection, like ``ping``: every /readyz probe asks both, and through
        SQLAlchemy's statement pipeline they cost ~1.7 ms of CPU together, ~0.6 ms so."""
        async with self._raw() as driver:
            if not await driver.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL"):
                return None
            value = await driver.fetchval("SELECT version_num FROM alembic_version")
            return str(value) if value is not None else None

    def connections_in_use(self) -> int:
        checked = getattr(self.engine.pool, "checkedout", None)
        return int(checked()) if callable(checked) else 0

    async def dispose(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Snapshot]:
        """A read-only REPEATABLE READ transaction: every read in it sees the database as of
        its first statement, however long the caller works in between (the reconciler reads
        the clock, lists pods, then streams the rows as they were before the list)."""
        with _translated_errors(data_errors=False):
            async with self.engine.connect() as conn:
                driver = await _driver(conn)
                try:
                    async with driver.transaction(isolation="repeatable_read", readonly=True):
                        yield Snapshot(driver)
                except BaseException as exc:
                    # Not for the caller's own failures (the pod list between two reads).
                    if ((_is_database_error(exc) and _is_connection_error(exc))
                            or driver.is_closed() or isinstance(exc, asyncio.CancelledError)):
                        await conn.invalidate()
                    raise


def migrations_location() -> Traversable:
    """The Alembic scripts shipped with this code.

    An installed wheel has them as ``ipam.migrations`` (pyproject maps migrations/ there). A
    checkout run as ``python -m ipam`` from its root imports the source ipam/, which has no
    ``ipam.migrations`` even when the wheel is installed too: there they are the migrations/
    directory next to the package.
    """
    try:
        return resources.files("ipam.migrations")
    except ModuleNotFoundError:
        checkout = Path(__file__).resolve().parents[2] / "migrations"
        if not (checkout / "env.py").is_file():
            raise
        return checkout


def _alembic_config(connection: object | None = None) -> object:
    from alembic.config import Config

    location = Path(str(migrations_location()))
    cfg = Config()
    cfg.set_main_option("script_location", str(location))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


_REVISION_FIELDS = ("revision", "down_revision", "branch_labels", "depends_on")


def _linear_head(versions: Traversable | None = None) -> str | None:
    """The head of a linear chain of migration files, read with ``ast`` instead of Alembic.

    Importing Alembic and loading its script directory took ~0.15-0.25 s of every start
    (with its Mako and Pygments imports), for a revision that is nearly always the one the
    database is at already. Anything but a plain chain (branches, labels, dependencies, a file
    without a revision) answers ``None``, and Alembic decides.
    """
    parents: dict[str, str | None] = {}
    if versions is None:
        versions = migrations_location() / "versions"
    for entry in versions.iterdir():
        name = entry.name
        if not name.endswith(".py") or name.startswith(("__init__", ".#")):
            continue
        fields: dict[str, object] = {}
        for node in ast.parse(entry.read_text()).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                target, value = node.target, node.value
            else:
                continue
            if isinstance(target, ast.Name) and target.id in _REVISION_FIELDS:
                try:
                    fields[target.id] = ast.literal_eval(value)
                except ValueError:
                    return None
        revision, down = fields.get("revision"), fields.get("down_revision")
        if (not isinstance(revision, str) or revision in parents
                or not (down is None or isinstance(down, str))
                or fields.get("branch_labels") or fields.get("depends_on")):
            return None
        parents[revision] = down
    children = [down for down in parents.values() if down is not None]
    heads = set(parents) - set(children)
    if len(heads) != 1 or len(set(children)) != len(children) or not set(children) <= set(parents):
        return None
    return heads.pop()


@functools.cache
def head_revision() -> str:
    """The newest migration shipped with this code (read once: /readyz asks every probe)."""
    light = _linear_head()
    if light is not None:
        return light
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config())  # type: ignore[arg-type]
    head = script.get_current_head()
    assert head is not None
    return head


async def wait_for_schema(db: Database, seconds: float, *, unreachable_seconds: float = 0.0,
                          poll: float = 2.0) -> None:
    """Return once the schema is at this code's head, which ``ipam migrate`` (the owner role)
    brings it to; the serving role may not migrate. ``Unavailable`` after ``seconds``; a
    database that cannot be reached is waited for ``unreachable_seconds`` at most."""
    loop = asyncio.get_running_loop()
    deadline, said = loop.time() + seconds, -float("inf")
    reach_by = loop.time() + min(seconds, unreachable_seconds)
    while True:
        # A database not reachable yet (a CloudNativePG cluster still starting on first
        # install) is waited for like a schema not migrated yet; at the deadline its error is
        # raised as it is, as ``migrate`` does: the CLI names the host it tried
        # (``ipam.cli.database.with_database``).
        try:
            revision = await db.schema_revision()
        except (OSError, DBAPIError) as exc:
            if loop.time() >= reach_by:
                raise
            message = f"the database cannot be reached yet ({type(exc).__name__}: {exc})"
        else:
            if revision == head_revision():
                return
            message = (f"the database schema is at revision {revision or 'none'}, this "
                       f"version needs {head_revision()}: run `ipam migrate` as the tables' "
                       "owner (IPAM_MIGRATE_DATABASE_URL)")
            if loop.time() >= deadline:
                raise Unavailable(message)
        if loop.time() - said >= 30:
            log.warning("waiting: %s", message)
            said = loop.time()
        await asyncio.sleep(min(poll, max(deadline - loop.time(), 0.0)))


async def migrate(db: Database, revision: str = "head", *, down: bool = False) -> None:
    """Apply migrations up to ``revision`` (or back to it with ``down``).

    Safe to run on every start and from many replicas at once: one migrates, the others wait
    on the advisory lock and then find nothing to do. A database already at head returns
    before Alembic is even imported (Alembic re-checks under the lock otherwise).
    """
    if revision == "head" and not down and await db.schema_revision() == head_revision():
        return
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
