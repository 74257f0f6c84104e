"""The in-process commands' one event loop against PostgreSQL (serve, migrate, check).

A database that cannot be reached ends as ``error: cannot reach the database at host:port
(reason)`` and exit 4, the password left out; anything else propagates to the root's one-line
report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ipam.cli.exits import fail

T = TypeVar("T")


def with_database(run: Callable[[], Coroutine[Any, Any, T]], *,
                  loop_factory: Callable[[], Any] | None = None) -> T:
    """``asyncio.run(run())``; a database that cannot be reached is exit 4, not a traceback."""
    import asyncio
    from urllib.parse import urlsplit

    from ipam.errors import IpamError
    from ipam.settings import get_settings

    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(run())
    except IpamError:
        raise
    except Exception as exc:
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        url = get_settings().database_url
        where = "the embedded database"
        if url is not None:
            parts = urlsplit(url.get_secret_value())
            where = f"the database at {parts.hostname}:{parts.port or 5432}"
        assert isinstance(cause, OSError)
        errno = cause.errno if isinstance(cause.errno, int) and cause.errno > 0 else None
        reason = (os.strerror(errno) if errno else cause.strerror or type(cause).__name__)
        fail(f"cannot reach {where} ({reason.lower()}); check IPAM_DATABASE_URL", "UNAVAILABLE")
