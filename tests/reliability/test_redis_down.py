"""Redis down (broker, cache, mailboxes, stop flags all in one server, as deployed): the pages, /search.json
and the API search still answer from the first stage and say so; a new artwork is kept and queued later by
``manage.py reconcile``; the health check says what is down. The Redis here is a real server the test
stops, so the site meets the outage on connections it already holds."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from collections_app.models import Artwork, ProcessingStep, StageStatus
from search_app.api.services import api_key_create
from tests.factories import ArtworkFactory
from workers.queues import Queue

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalogue(db) -> list[Artwork]:  # type: ignore[no-untyped-def]
    return [
        ArtworkFactory(title="The Annunciation with a lily"),
        ArtworkFactory(title="Saint Jerome in his study"),
        ArtworkFactory(title="A still life with lemons"),
    ]


@pytest.fixture
def quick_search(settings):  # type: ignore[no-untyped-def]
    """No worker runs in these tests: a search with Redis up waits this long for one, not the default."""
    settings.SEARCH = {**settings.SEARCH, "encode_timeout_s": 0.3, "rerank_timeout_s": 0.3}


def test_searches_answer_from_the_first_stage_when_redis_dies(  # type: ignore[no-untyped-def]
    own_redis, catalogue, quick_search
) -> None:
    page = Client()
    # With Redis up the site holds pooled connections to it (broker, cache): the outage breaks those.
    before = page.get("/search.json", {"q": "annunciation"})
    assert before.status_code == 200
    own_redis.stop()

    body = page.get("/search.json", {"q": "annunciation lily"}).json()
    assert [hit["title"] for hit in body["hits"]][:1] == ["The Annunciation with a lily"]
    assert body["reranked"] is False
    assert "task queue unreachable" in body["degraded"]

    html = page.get("/", {"q": "annunciation lily"})
    assert html.status_code == 200
    assert "The Annunciation with a lily" in html.text
    assert "Less precise than usual" in html.text and "task queue unreachable" in html.text

    api = APIClient()
    response = api.get("/api/v1/search/", {"q": "saint jerome"})  # anonymous: the rate count is in Redis too
    assert response.status_code == 200, response.content
    assert response.json()["results"][0]["title"] == "Saint Jerome in his study"
    assert "task queue unreachable" in response.json()["degraded"]

    # "More like this" still reads stored vectors; with none stored it says it fell back to words.
    similar = api.get(f"/api/v1/artworks/{catalogue[1].pk}/similar/")
    assert similar.status_code == 200, similar.content
    assert "task queue unreachable" in similar.json()["degraded"]


def test_an_artwork_created_while_redis_is_down_is_queued_by_reconcile_later(  # type: ignore[no-untyped-def]
    own_redis, django_capture_on_commit_callbacks
) -> None:
    key = api_key_create(name="writer", scopes=["write"])[1]
    own_redis.stop()
    with django_capture_on_commit_callbacks(execute=True):
        response = APIClient().post(
            "/api/v1/artworks/",
            {
                "source_id": "OUTAGE-1",
                "title": "Made during the outage",
                "image_url": "https://example.org/a.jpg",
            },
            format="json",
            HTTP_AUTHORIZATION=f"Api-Key {key}",
        )
    assert response.status_code == 202, response.content
    artwork = Artwork.objects.get(source_id="OUTAGE-1")
    steps = set(ProcessingStep.objects.filter(artwork=artwork).values_list("status", flat=True))
    assert steps == {StageStatus.QUEUED}  # the rows say what is owed; no message could be sent

    own_redis.start()  # Redis is back, empty; the process reconnects on its own
    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("reconcile", "--stuck-after", "0", "--skip-model-check", stdout=out)
    assert f"{artwork.pk}\tstuck" in out.getvalue()
    assert own_redis.client().llen(Queue.CPU.value) == 1


def test_health_says_the_broker_is_down(own_redis) -> None:  # type: ignore[no-untyped-def]
    own_redis.stop()
    response = APIClient().get("/api/v1/health/")
    assert response.status_code == 200 and response.json()["status"] == "degraded"  # search still answers
    broker = response.json()["checks"]["broker"]
    assert broker["ok"] is False and "Connection refused" in broker["error"]
