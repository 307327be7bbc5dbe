"""Search through the API, on the real pipeline (search_app.pipeline) and the real database.

What is tested is the API around the pipeline, so the embedder is the search tests' FakeTableEmbedder
(tests/search_app/doubles.py) with vectors the test chooses. No worker runs here: the query encoder times
out quickly and text searches answer from the lexical and ICONCLASS legs, saying so in ``degraded``.
"""

from __future__ import annotations

import pytest

from tests.factories import ArtworkFactory, DetailFactory
from tests.search_app.api.conftest import assert_error
from tests.search_app.conftest import embed_artwork, embed_detail

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _quick_degrade(settings, fake_models, clean_cache):  # type: ignore[no-untyped-def]
    settings.SEARCH = {**settings.SEARCH, "encode_timeout_s": 0.3, "rerank_timeout_s": 0.3}


def test_text_search_returns_scored_hits_and_pages(api):
    lions = [ArtworkFactory(title=f"Saint Jerome with the lion {i}") for i in range(5)]
    ArtworkFactory(title="A still life with lemons")
    response = api.get("/api/v1/search/?q=lion&limit=2&rerank=false")
    assert response.status_code == 200, response.content
    body = response.json()
    assert len(body["results"]) == 2 and body["has_more"] is True and body["next_offset"] == 2
    assert body["degraded"]  # no worker encoded the query: the answer says so
    first = body["results"][0]
    assert first["artwork"] in {a.pk for a in lions}
    assert isinstance(first["score"], float) and first["url"].endswith(
        f"/api/v1/artworks/{first['artwork']}/"
    )
    seen = [r["artwork"] for r in body["results"]]
    url = body["next"]
    while url:
        page = api.get(url).json()
        seen += [r["artwork"] for r in page["results"]]
        url = page["next"]
    assert sorted(seen) == sorted(a.pk for a in lions)


def test_post_search_with_filters(api):
    keep = ArtworkFactory(
        title="Lion in the desert", classification="Painting", date_begin=1500, date_end=1510
    )
    ArtworkFactory(title="Lion of Venice", classification="Icon", date_begin=1500, date_end=1510)
    ArtworkFactory(title="Lion on the stairs", classification="Painting", date_begin=1800, date_end=1800)
    response = api.post(
        "/api/v1/search/",
        {"q": "lion", "classification": "Painting", "date_to": 1600, "rerank": False, "limit": 10},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert [r["artwork"] for r in response.json()["results"]] == [keep.pk]


def test_similar_ranks_by_the_pictures_vectors(api):
    source, near, far = ArtworkFactory(title="A"), ArtworkFactory(title="B"), ArtworkFactory(title="C")
    embed_artwork(source, [1, 0, 0, 0, 0, 0, 0, 0])
    embed_artwork(near, [0.9, 0.1, 0, 0, 0, 0, 0, 0])
    embed_artwork(far, [0, 0, 0, 0, 0, 0, 0, 1])
    response = api.get(f"/api/v1/artworks/{source.pk}/similar/?limit=2")
    assert response.status_code == 200, response.content
    hits = response.json()["results"]
    assert source.pk not in [h["artwork"] for h in hits]
    assert hits[0]["artwork"] == near.pk and hits[0]["score"] >= hits[-1]["score"]


def test_detail_search_returns_the_matched_region(api):
    artwork = ArtworkFactory(title="Jerome")
    other = ArtworkFactory(title="Other")
    lion = DetailFactory(artwork=artwork, label="lion", x=0.5, y=0.5, w=0.25, h=0.25)
    like = DetailFactory(artwork=other, label="lion")
    embed_detail(lion, [1, 0, 0, 0, 0, 0, 0, 0])
    embed_detail(like, [1, 0.05, 0, 0, 0, 0, 0, 0])
    response = api.post(
        "/api/v1/search/", {"like_detail": like.pk, "level": "entity", "rerank": False}, format="json"
    )
    assert response.status_code == 200, response.content
    hit = next(h for h in response.json()["results"] if h["artwork"] == artwork.pk)
    assert hit["region"]["detail"] == lion.pk and hit["region"]["box"] == [0.5, 0.5, 0.25, 0.25]
    assert hit["region"]["crop_url"].endswith(f"/api/v1/details/{lion.pk}/crop/")


def test_an_artworks_search_naming_a_placed_thing_returns_the_placement(api):
    from collections_app.models import Placement

    artwork = ArtworkFactory(title="Saint Jerome with the lion")
    Placement.objects.create(artwork=artwork, label="lion", x=0.5, y=0.25, w=0.25, h=0.5, confidence=0.8)
    response = api.get("/api/v1/search/?q=lion&rerank=false")
    assert response.status_code == 200, response.content
    hit = next(h for h in response.json()["results"] if h["artwork"] == artwork.pk)
    assert hit["region"] == {
        "detail": None,
        "level": "placement",
        "box": [0.5, 0.25, 0.25, 0.5],
        "label": "lion",
        "caption": "",
        "crop_url": None,
    }


def test_search_validation(api, painting):
    assert_error(api.get("/api/v1/artworks/999999/similar/"), 404, "not_found")
    assert_error(api.get("/api/v1/search/"), 400, "invalid")
    assert_error(api.get("/api/v1/search/?q=lion&limit=0"), 400, "invalid")
    assert_error(api.get("/api/v1/search/?q=lion&level=planet"), 400, "invalid")
    assert_error(api.post("/api/v1/search/", {"like_detail": 999999}, format="json"), 404, "not_found")
    from django.core.files.uploadedfile import SimpleUploadedFile

    html = SimpleUploadedFile("x.jpg", b"<html><body>not a picture</body></html>", content_type="image/jpeg")
    err = assert_error(api.post("/api/v1/search/", {"image": html}, format="multipart"), 400, "invalid")
    assert "image" in err["details"]
    with painting.open("rb") as fh:  # a real picture is taken; no worker embeds it here, and it says so
        response = api.post("/api/v1/search/", {"image": fh, "rerank": False}, format="multipart")
    assert response.status_code == 200, response.content
    assert "image encoder unavailable" in response.json()["degraded"]


def test_missing_models_answer_degraded_not_500(api, settings, monkeypatch):
    from workers.inference import registry

    monkeypatch.setitem(
        registry.BACKENDS["embedder"],
        "fake-missing",
        "tests.search_app.api.doubles.FakeMissingWeightsEmbedder",
    )
    settings.SEMART_MODELS = {**settings.SEMART_MODELS, "embedder": "fake-missing"}
    registry.get_model.cache_clear()
    artwork = ArtworkFactory(title="Lion")
    for url in (f"/api/v1/artworks/{artwork.pk}/similar/", "/api/v1/search/?q=lion"):
        response = api.get(url)
        assert response.status_code in (200, 503), response.content
        if response.status_code == 200:
            assert response.json()["degraded"], "a search without its models must say it is degraded"
        else:
            assert_error(response, 503, "search_unavailable")
    registry.get_model.cache_clear()
