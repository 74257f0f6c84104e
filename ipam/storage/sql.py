"""How repositories run SQL: ``:name`` parameters in, rows as mappings out, on asyncpg.

The unit of work (``Database.transaction``) runs statements on the pooled connection's
asyncpg connection itself: SQLAlchemy's execution pipeline (compile cache, result
processing, a greenlet switch per statement) cost ~200-250 us of CPU per statement against
~60-80 us for asyncpg, and a bind is six to eight statements. SQLAlchemy keeps what it is
good at here: the connection pool and Alembic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

Row = Mapping[str, Any]

#: ``:name``, but not the second colon of a ``::type`` cast nor anything in a '...' literal.
_PARAM = re.compile(r"'(?:[^']|'')*'|(?<![:\w]):([A-Za-z_]\w*)")


class Sql(Protocol):
    """What repositories need from a connection inside a transaction."""

    async def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> Sequence[Row]:
        ...

    async def row(self, sql: str, params: Mapping[str, Any] | None = None) -> Row | None:
        ...

    async def scalar(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        ...

    async def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        """Run a statement; the number of rows it affected."""
        ...

    async def execute_many(self, sql: str, params: Iterable[Mapping[str, Any]]) -> None:
        ...


class _Positional:
    """``:name`` SQL turned into asyncpg's ``$n`` form, once per distinct statement."""

    __slots__ = ("names", "sql")

    def __init__(self, sql: str) -> None:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            name = match.group(1)
            if name is None:  # a string literal, kept as it is
                return match.group(0)
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"

        self.sql = _PARAM.sub(number, sql)
        self.names = tuple(names)

    def args(self, params: Mapping[str, Any] | None) -> list[Any]:
        if not self.names:
            return []
        if params is None:
            raise KeyError(f"SQL needs parameters {', '.join(self.names)}")
        return [params[n] for n in self.names]


_compiled: dict[str, _Positional] = {}


def positional(sql: str) -> _Positional:
    found = _compiled.get(sql)
    if found is None:
        found = _compiled[sql] = _Positional(sql)
    return found


def _affected(status: str) -> int:
    """asyncpg's command tag (``UPDATE 3``, ``INSERT 0 5``): its last number."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class AsyncpgSql:
    """Statements on an asyncpg connection (prepared and cached by asyncpg itself)."""

    __slots__ = ("conn",)

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> Sequence[Row]:
        stmt = positional(sql)
        result: Sequence[Row] = await self.conn.fetch(stmt.sql, *stmt.args(params))
        return result

    async def row(self, sql: str, params: Mapping[str, Any] | None = None) -> Row | None:
        stmt = positional(sql)
        result: Row | None = await self.conn.fetchrow(stmt.sql, *stmt.args(params))
        return result

    async def scalar(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        stmt = positional(sql)
        return await self.conn.fetchval(stmt.sql, *stmt.args(params))

    async def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        stmt = positional(sql)
        return _affected(str(await self.conn.execute(stmt.sql, *stmt.args(params))))

    async def execute_many(self, sql: str, params: Iterable[Mapping[str, Any]]) -> None:
        stmt = positional(sql)
        batch = [stmt.args(p) for p in params]
        if len(batch) == 1:
            await self.conn.execute(stmt.sql, *batch[0])  # one round trip, no pipeline set-up
        elif batch:
            await self.conn.executemany(stmt.sql, batch)
