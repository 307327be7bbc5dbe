"""Health checks for load balancers: database, broker, workers, each with a short timeout."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection

HEALTH_STATUSES = ("ok", "degraded", "down")


@dataclass
class Check:
    ok: bool
    ms: float
    error: str = ""
    workers: list[str] = field(default_factory=list)


def _timed(fn: Any) -> Check:
    start = time.perf_counter()
    try:
        extra = fn() or []
        return Check(ok=True, ms=round((time.perf_counter() - start) * 1000, 1), workers=extra)
    except Exception as exc:  # a health check reports every failure instead of raising it
        return Check(
            ok=False, ms=round((time.perf_counter() - start) * 1000, 1), error=f"{type(exc).__name__}: {exc}"
        )


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _broker_connection() -> Any:
    from kombu import Connection

    # Read the URL at call time (not the Celery app's cached conf) so it is what settings say now.
    timeout = settings.SEMART_API["health_timeout_s"]
    return Connection(
        settings.CELERY_BROKER_URL,
        connect_timeout=timeout,
        transport_options={"socket_timeout": timeout, "socket_connect_timeout": timeout, "max_retries": 0},
    )


def _broker() -> None:
    with _broker_connection() as conn:
        conn.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0, timeout=settings.SEMART_API["health_timeout_s"]
        )
        # kombu connects lazily for Redis; a round trip proves the server answers.
        conn.default_channel.client.ping()


def _workers() -> list[str]:
    """The first worker to answer a ping: the check stops there instead of waiting out the timeout for
    every worker to answer (a second or more for each load balancer probe). ``celery -A semart_site
    inspect ping`` lists them all."""
    from semart_site.celery import app

    timeout = settings.SEMART_API["health_timeout_s"]
    with _broker_connection() as conn:
        replies = app.control.inspect(timeout=timeout, connection=conn, limit=1).ping() or {}
    if not replies:
        raise RuntimeError("no worker answered the ping")
    return sorted(replies)


def health_report() -> tuple[dict[str, Any], bool]:
    """The report and whether the site can serve. Only the database is vital: with the broker or the workers
    down, pages and searches still answer (first stage, flagged degraded) and new work waits in the database
    for ``manage.py reconcile``, so a load balancer must not take every web node out for it."""
    database = _timed(_database)
    broker = _timed(_broker)
    workers = _timed(_workers) if broker.ok else Check(ok=False, ms=0.0, error="broker unreachable")
    serving = database.ok
    status = "ok" if serving and workers.ok else ("degraded" if serving else "down")
    checks = {
        name: asdict(c) for name, c in (("database", database), ("broker", broker), ("workers", workers))
    }
    for name in ("database", "broker"):
        checks[name].pop("workers")
    return {"status": status, "checks": checks}, serving
