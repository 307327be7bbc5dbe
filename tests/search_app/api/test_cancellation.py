"""The API's search is awaited by the request: when the partner's client goes away, the rerank stops.

Same set-up as tests/search_app/test_cancellation.py (real worker, FakeSlowReranker counting its batches in
Redis, uvicorn), through /api/v1/search/ and its adrf view instead of /search.json.
"""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.search_app.doubles import FakeSlowReranker
from tests.search_app.test_cancellation import N_ARTWORKS, _batches, _wait_for, slow_rerank  # noqa: F401


@pytest.mark.django_db(transaction=True)
def test_client_disconnect_stops_the_api_search(slow_rerank, celery_worker, live_api) -> None:  # noqa: F811
    redis_client = slow_rerank
    host, port = live_api.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        f"GET /api/v1/search/?q=angel HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    )
    _wait_for(lambda: _batches(redis_client, "angel") >= 2)  # the rerank is running on the worker

    sock.close()
    at_close = _batches(redis_client, "angel")
    time.sleep(FakeSlowReranker.seconds_per_batch * 5)
    after = _batches(redis_client, "angel")
    assert after <= at_close + 1, f"{after - at_close} batches after the client left"
    assert after < N_ARTWORKS

    # A client that waits gets the full, reranked answer.
    response = httpx.get(f"{live_api}/api/v1/search/", params={"q": "lion", "limit": 5}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["reranked"] is True
    assert _batches(redis_client, "lion") == N_ARTWORKS
