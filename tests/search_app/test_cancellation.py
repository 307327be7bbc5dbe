"""Cancellation follows the request: the real ASGI app under uvicorn, a real Celery worker running a slow
reranker (FakeSlowReranker, counting its batches in Redis), a client that goes away or searches again."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from search_app.iconclass_expansion import forget_catalogue_notations
from tests.factories import ArtworkFactory
from tests.search_app.conftest import embed_artwork, unit
from tests.search_app.doubles import BATCH_COUNTER_KEY, FakeSlowReranker
from workers.inference import registry

N_ARTWORKS = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def asgi_server() -> Iterator[str]:
    """uvicorn serving semart_site.asgi in a thread of this process (so it sees the test database)."""
    import uvicorn

    port = _free_port()
    config = uvicorn.Config(
        "semart_site.asgi:application", host="127.0.0.1", port=port, lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def slow_rerank(fake_models, settings, clean_cache):  # type: ignore[no-untyped-def]
    forget_catalogue_notations()
    settings.SEMART_MODELS = {**settings.SEMART_MODELS, "reranker": "fake-slow"}
    settings.SEARCH = {**settings.SEARCH, "rerank_timeout_s": 30, "encode_timeout_s": 10}
    registry.get_model.cache_clear()
    rng = np.random.default_rng(3)
    fake_models.table = {"angel": unit(rng.standard_normal(8)), "lion": unit(rng.standard_normal(8))}
    for i in range(N_ARTWORKS):
        embed_artwork(ArtworkFactory(title=f"Angel and lion {i}"), rng.standard_normal(8))
    return clean_cache


def _batches(redis_client, text: str) -> int:  # type: ignore[no-untyped-def]
    return int(redis_client.get(f"{BATCH_COUNTER_KEY}:{text}") or 0)


def _wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def _open_search(address: str, query: str, client: str) -> socket.socket:
    host, port = address.split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        f"GET /search.json?q={query}&client={client} HTTP/1.1\r\n"
        f"Host: {address}\r\nConnection: close\r\n\r\n".encode()
    )
    return sock


def _read_json(sock: socket.socket) -> tuple[int, dict]:  # type: ignore[type-arg]
    sock.settimeout(30)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    if b"transfer-encoding: chunked" in head.lower():
        decoded, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            decoded, rest = decoded + rest[:size], rest[size + 2 :]
        body = decoded
    return status, json.loads(body)


@pytest.mark.django_db(transaction=True)
def test_client_disconnect_stops_the_rerank_within_one_batch(slow_rerank, celery_worker, asgi_server) -> None:
    redis_client = slow_rerank
    sock = _open_search(asgi_server, "angel", "visitor-one")
    _wait_for(lambda: _batches(redis_client, "angel") >= 2)  # the rerank is running on the worker

    sock.close()
    at_close = _batches(redis_client, "angel")
    time.sleep(FakeSlowReranker.seconds_per_batch * 5)

    after = _batches(redis_client, "angel")
    assert after <= at_close + 1, f"{after - at_close} batches after the client left"
    assert after < N_ARTWORKS  # it did not run to the end
    # The worker is free again: another search is reranked to the end.
    response = httpx.get(
        f"http://{asgi_server}/search.json", params={"q": "lion", "client": "visitor-two"}, timeout=30
    )
    assert response.status_code == 200
    assert response.json()["reranked"] is True
    assert _batches(redis_client, "lion") == N_ARTWORKS


@pytest.mark.django_db(transaction=True)
def test_a_new_search_from_the_same_visitor_stops_the_previous_rerank(
    slow_rerank, celery_worker, asgi_server
) -> None:
    redis_client = slow_rerank
    first = _open_search(asgi_server, "angel", "same-visitor")
    _wait_for(lambda: _batches(redis_client, "angel") >= 2)

    second = _open_search(asgi_server, "lion", "same-visitor")
    at_second = _batches(redis_client, "angel")
    _wait_for(lambda: _batches(redis_client, "lion") >= 1)  # the worker moved on to the new search
    status_first, body_first = _read_json(first)
    status_second, body_second = _read_json(second)

    final = _batches(redis_client, "angel")
    assert final <= at_second + 1, f"{final - at_second} batches after the new search"
    assert final < N_ARTWORKS
    # The superseded page still answers, from the first stage, and says why; the new one is reranked.
    assert status_first == 200 and body_first["reranked"] is False and "rerank" in body_first["degraded"]
    assert body_first["hits"]
    assert status_second == 200 and body_second["reranked"] is True
    assert _batches(redis_client, "lion") == N_ARTWORKS
