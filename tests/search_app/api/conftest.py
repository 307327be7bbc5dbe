"""Fixtures for the partner API: keys, a client, and a real uvicorn server for curl and schemathesis."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from search_app.api.services import api_key_create


@pytest.fixture(autouse=True)
def _fresh_throttles(redis_client, settings):  # type: ignore[no-untyped-def]
    """Throttle counters live in the Redis cache: each test starts from zero, at generous rates."""
    settings.SEMART_API = {**settings.SEMART_API, "anon_rate": "1000/minute", "key_rate": "1000/minute"}


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def read_key(db) -> str:  # type: ignore[no-untyped-def]
    return api_key_create(name="reader", scopes=["read"])[1]


@pytest.fixture
def write_key(db) -> str:  # type: ignore[no-untyped-def]
    return api_key_create(name="writer", scopes=["write"])[1]


def auth(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Api-Key {key}"}


def assert_error(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


@pytest.fixture
def painting(art_dev: Path) -> Path:
    return sorted((art_dev / "images").glob("*.jpg"))[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def live_api(transactional_db) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """uvicorn serving the site's ASGI app on 127.0.0.1, in a thread of this process, so it uses the test
    database (rows a test commits are visible to it)."""
    import uvicorn
    from django.core.asgi import get_asgi_application

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            get_asgi_application(), host="127.0.0.1", port=port, lifespan="off", log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    # The server's worker threads keep their own database connections open; end them, or the test
    # database cannot be flushed and dropped after the test.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
