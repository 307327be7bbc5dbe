"""Search through the API, on the real pipeline (search_app.pipeline) and the real database.

No worker runs here, so the query encoder times out quickly and the pipeline answers from its lexical and
ICONCLASS legs, saying so in ``degraded``: what is tested is the API around the pipeline, not model quality.
"""

from __future__ import annotations

import pytest

from tests.factories import ArtworkFactory
from tests.search_app.api.conftest import assert_error

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _quick_degrade(settings):  # type: ignore[no-untyped-def]
    settings.SEARCH = {**settings.SEARCH, "encode_timeout_s": 0.3, "rerank_timeout_s": 0.3}


def test_text_search_returns_scored_hits_and_pages(api):
    lions = [ArtworkFactory(title=f"Saint Jerome with the lion {i}") for i in range(5)]
    ArtworkFactory(title="A still life with lemons")
    response = api.get("/api/v1/search/?q=lion&limit=2&rerank=false")
    assert response.status_code == 200, response.content
    body = response.json()
    assert len(body["results"]) == 2 and body["has_more"] is True and body["next_offset"] == 2
    first = body["results"][0]
    assert first["artwork"] in {a.pk for a in lions}
    assert isinstance(first["score"], float) and first["url"].endswith(f"/api/v1/artworks/{first['artwork']}/")
    seen = [r["artwork"] for r in body["results"]]
    url = body["next"]
    while url:
        page = api.get(url).json()
        seen += [r["artwork"] for r in page["results"]]
        url = page["next"]
    assert sorted(seen) == sorted(a.pk for a in lions)


def test_post_search_with_filters_and_exclusions(api):
    keep = ArtworkFactory(title="Lion in the desert", classification="Painting", date_begin=1500, date_end=1510)
    ArtworkFactory(title="Lion of Venice", classification="Icon", date_begin=1500, date_end=1510)
    ArtworkFactory(title="Lion on the stairs", classification="Painting", date_begin=1800, date_end=1800)
    response = api.post(
        "/api/v1/search/",
        {"q": "lion", "classification": "Painting", "date_to": 1600, "rerank": False, "limit": 10},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert [r["artwork"] for r in response.json()["results"]] == [keep.pk]


def test_similar_and_search_validation(api):
    artwork = ArtworkFactory(title="Lion")
    response = api.get(f"/api/v1/artworks/{artwork.pk}/similar/")
    assert response.status_code == 200, response.content
    assert artwork.pk not in [r["artwork"] for r in response.json()["results"]]
    assert_error(api.get("/api/v1/artworks/999999/similar/"), 404, "not_found")
    assert_error(api.get("/api/v1/search/"), 400, "invalid")
    assert_error(api.get("/api/v1/search/?q=lion&limit=0"), 400, "invalid")
    assert_error(api.get("/api/v1/search/?q=lion&level=planet"), 400, "invalid")
    assert_error(api.post("/api/v1/search/", {"like_detail": 999999}, format="json"), 404, "not_found")
