"""PostgreSQL restarted under a running site: the sessions it held end (pg_terminate_backend, what a restart
does to them). The next request is served, and a stage whose connection died mid-run fails on the transient
OperationalError, is retried with backoff and finishes.

Between tasks a restart costs nothing: Celery's Django fixup closes the connection after every task. Under
ASGI each request's sync code runs in a thread of its own with its own connection; CONN_HEALTH_CHECKS covers
a connection kept across requests (WSGI, management commands)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.core.files.base import ContentFile

from collections_app.models import Artwork, ProcessingStatus, ProcessingStep, Stage, StageStatus
from tests.factories import ArtworkFactory
from tests.reliability.conftest import free_port, terminate_site_connections
from tests.reliability.doubles import FakeGatedDetector
from tests.workers.fakes import (
    FakeContextCaptioner,
    FakeHashEmbedder,
    fake_models_fixture,  # noqa: F401 - the fixture
)
from workers.dispatch import pipeline_enqueue

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def live_site() -> Iterator[str]:
    """The site's ASGI application under uvicorn, in a thread of this process so it sees the test database.
    Its request handling is the real one (connections checked at each request start)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            "semart_site.asgi:application", host="127.0.0.1", port=port, lifespan="off", log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _wait_finished(artwork: Artwork, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        artwork.refresh_from_db()
        if artwork.status in (ProcessingStatus.PROCESSED, ProcessingStatus.FAILED):
            return
        time.sleep(0.2)


def _with_picture(art_dev: Path, index: int = 0) -> Artwork:
    artwork = ArtworkFactory()
    picture = sorted((art_dev / "images").glob("*.jpg"))[index]
    artwork.image.save("picture.jpg", ContentFile(picture.read_bytes()), save=True)
    return artwork


def test_the_site_keeps_no_connection_between_requests(live_site: str, redis_client) -> None:  # type: ignore[no-untyped-def]
    # Under ASGI a kept connection belongs to a short-lived thread and lingers: each request closes its own.
    artwork = ArtworkFactory(title="Nothing kept")
    before = _other_sessions()  # earlier tests' helpers may still hold some: count what the requests add
    with httpx.Client(base_url=live_site, timeout=30) as http:
        for _ in range(5):
            assert http.get(f"/artworks/{artwork.pk}/").status_code == 200
            assert http.get(f"/api/v1/artworks/{artwork.pk}/").status_code == 200
    deadline = time.monotonic() + 3  # the last request's connection closes just after its response is sent
    while _other_sessions() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _other_sessions() <= before


def _other_sessions() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


@pytest.fixture
def kept_connections() -> Iterator[None]:
    """Connections kept between requests, as a deployment may choose (DATABASE_CONN_MAX_AGE, under WSGI)."""
    from django.db import connections

    connections.settings["default"]["CONN_MAX_AGE"] = 60
    yield
    connections.settings["default"]["CONN_MAX_AGE"] = 0


def test_the_next_request_after_a_restart_is_served(live_site: str, redis_client, kept_connections) -> None:  # type: ignore[no-untyped-def]
    artwork = ArtworkFactory(title="Kept across the restart")
    with httpx.Client(base_url=live_site, timeout=30) as http:
        assert http.get(f"/artworks/{artwork.pk}/").status_code == 200
        assert http.get(f"/api/v1/artworks/{artwork.pk}/").status_code == 200
        assert terminate_site_connections() >= 1  # the site's kept-alive connection is gone

        page = http.get(f"/artworks/{artwork.pk}/")
        assert page.status_code == 200 and "Kept across the restart" in page.text
        api = http.get(f"/api/v1/artworks/{artwork.pk}/")
        assert api.status_code == 200 and api.json()["title"] == "Kept across the restart"


def test_a_stage_whose_connection_died_is_retried_and_finishes(  # type: ignore[no-untyped-def]
    celery_worker, monkeypatch, settings, art_dev: Path
) -> None:
    settings.SEMART_PIPELINE = {"max_retries": 3, "retry_base_s": 0.2, "retry_max_s": 1.0}
    detector = FakeGatedDetector()
    fakes = {"embedder": FakeHashEmbedder(), "detector": detector, "captioner": FakeContextCaptioner()}
    monkeypatch.setattr("workers.inference.registry.get_model", lambda role, key=None: fakes[role])
    artwork = _with_picture(art_dev)

    pipeline_enqueue(artwork_ids=[artwork.pk])
    assert detector.entered.wait(timeout=60), "the entities stage never started"
    assert terminate_site_connections() >= 1  # the worker's connection, holding the artwork's row lock
    detector.release.set()

    _wait_finished(artwork)
    step = ProcessingStep.objects.get(artwork=artwork, stage=Stage.ENTITIES)
    assert artwork.status == ProcessingStatus.PROCESSED, (artwork.status, step.last_error)
    assert step.status == StageStatus.DONE and step.attempts == 2
    assert detector.calls == 2
    assert Artwork.objects.get(pk=artwork.pk).details.count() > 0
