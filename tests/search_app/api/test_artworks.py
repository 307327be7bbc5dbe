"""Artworks through the API: paging, filters, retrieve, create/update/delete, details, crops, status."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone
from PIL import Image

from collections_app.models import Artwork, Placement, ProcessingStatus, ProcessingStep, Stage, StageStatus
from tests.factories import ArtistFactory, ArtworkFactory, DetailFactory
from tests.search_app.api.conftest import assert_error, auth

pytestmark = pytest.mark.django_db


def test_cursor_pagination_walks_every_artwork_once(api):
    made = {a.pk for a in ArtworkFactory.create_batch(55)}
    seen: list[int] = []
    url = "/api/v1/artworks/?page_size=20"
    pages = 0
    while url:
        body = api.get(url).json()
        seen += [a["id"] for a in body["results"]]
        url = body["next"]
        pages += 1
        if pages == 1:
            ArtworkFactory()  # added while a partner is paging: must not shift the pages
    assert pages == 3
    assert len(seen) == len(set(seen)) == 55 and set(seen) == made
    assert seen == sorted(seen, reverse=True)


def test_page_size_is_capped(api):
    ArtworkFactory.create_batch(3)
    assert len(api.get("/api/v1/artworks/?page_size=1").json()["results"]) == 1
    assert len(api.get("/api/v1/artworks/?page_size=100000").json()["results"]) == 3


def test_filters(api):
    rembrandt = ArtistFactory(name="Rembrandt van Rijn")
    a = ArtworkFactory(date_begin=1630, date_end=1635, classification="Painting", medium="Oil on canvas")
    a.artists.add(rembrandt)
    b = ArtworkFactory(date_begin=1420, date_end=1430, classification="Icon", medium="Tempera on panel")
    c = ArtworkFactory(date_begin=1700, date_end=1700, classification="Drawing", medium="Ink on paper")
    Artwork.objects.filter(pk=c.pk).update(updated_at=timezone.now() - timedelta(days=30))

    def ids(query: str) -> set[int]:
        response = api.get(f"/api/v1/artworks/?{query}")
        assert response.status_code == 200, response.content
        return {r["id"] for r in response.json()["results"]}

    assert ids("artist=rembrandt") == {a.pk}
    assert ids("date_from=1400&date_to=1500") == {b.pk}
    assert ids("date_from=1600") == {a.pk, c.pk}
    assert ids("classification=icon") == {b.pk}
    assert ids("medium=tempera") == {b.pk}
    since = (timezone.now() - timedelta(days=1)).isoformat()
    assert ids(f"updated_since={since.replace('+', '%2B')}") == {a.pk, b.pk}
    assert_error(api.get("/api/v1/artworks/?date_from=1600&date_to=1500"), 400, "invalid")
    assert_error(api.get("/api/v1/artworks/?updated_since=yesterday"), 400, "invalid")


def _jpeg(size: tuple[int, int] = (200, 100)) -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGB", size, (255, 255, 255))
    img.paste((255, 0, 0), (100, 0, 200, 50))  # the top-right quarter is red
    img.save(buf, "JPEG")
    return buf.getvalue()


def test_retrieve_has_details_subjects_and_image_urls(api):
    artwork = ArtworkFactory(
        iconclass=["11H(JEROME)"],
        iiif_url="https://iiif.example.org/iiif/abc",
        image_url="https://example.org/a.jpg",
    )
    artwork.image.save("a.jpg", ContentFile(_jpeg()), save=True)
    entity = DetailFactory(artwork=artwork, level="entity", label="lion")
    DetailFactory(artwork=artwork, level="scene", label="study", x=0.0, y=0.0, w=1.0, h=1.0)
    DetailFactory(artwork=artwork, level="entity", label="rejected", review_state="hidden")
    Placement.objects.create(
        artwork=artwork, label="halo", x=0.5, y=0.0, w=0.25, h=0.2, confidence=0.4, model_key="placer@1"
    )

    body = api.get(f"/api/v1/artworks/{artwork.pk}/").json()
    assert body["subjects"][0]["notation"] == "11H(JEROME)"
    assert "Jerome" in body["subjects"][0]["text"] and "lion" in body["subjects"][0]["keywords"]
    assert {d["label"] for d in body["details"]} == {"lion", "study"}
    assert body["placements"] == [
        {"label": "halo", "box": [0.5, 0.0, 0.25, 0.2], "confidence": 0.4, "model_key": "placer@1"}
    ]
    assert body["images"]["image"].startswith("http://testserver/media/")
    assert body["images"]["iiif_info"] == "https://iiif.example.org/iiif/abc/info.json"
    assert body["images"]["source"] == "https://example.org/a.jpg"
    assert body["links"]["status"].endswith(f"/api/v1/artworks/{artwork.pk}/status/")

    entities = api.get(f"/api/v1/artworks/{artwork.pk}/details/?level=entity").json()
    assert [d["label"] for d in entities] == ["lion"]
    assert_error(api.get(f"/api/v1/artworks/{artwork.pk}/details/?level=planet"), 400, "invalid")

    detail = api.get(f"/api/v1/details/{entity.pk}/").json()
    assert detail["box"] == [0.1, 0.1, 0.3, 0.3] and detail["crop_url"].endswith(
        f"/details/{entity.pk}/crop/"
    )


def test_detail_crop_is_cut_from_the_picture(api):
    artwork = ArtworkFactory()
    artwork.image.save("a.jpg", ContentFile(_jpeg((200, 100))), save=True)
    detail = DetailFactory(artwork=artwork, x=0.5, y=0.0, w=0.5, h=0.5)
    response = api.get(f"/api/v1/details/{detail.pk}/crop/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    crop = Image.open(io.BytesIO(response.content)).convert("RGB")
    assert crop.size == (100, 50)
    r, g, b = crop.getpixel((50, 25))
    assert r > 200 and g < 60 and b < 60  # the red quarter, not the white rest

    no_image = DetailFactory()
    assert_error(api.get(f"/api/v1/details/{no_image.pk}/crop/"), 404, "not_found")
    hidden = DetailFactory(artwork=artwork, review_state="hidden")
    assert_error(api.get(f"/api/v1/details/{hidden.pk}/crop/"), 404, "not_found")


def test_create_with_upload_queues_processing(api, write_key, painting, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks, painting.open("rb") as fh:
        response = api.post(
            "/api/v1/artworks/",
            {
                "source": "partner",
                "source_id": "P-1",
                "title": "A saint",
                "artists": ["Unknown Cretan"],
                "display_date": "c. 1500",
                "iconclass": ["11H(JEROME)", "NOT-A-NOTATION"],
                "image": fh,
            },
            format="multipart",
            **auth(write_key),
        )
    assert response.status_code == 202, response.content
    body = response.json()
    artwork = Artwork.objects.get(source="partner", source_id="P-1")
    assert body["artwork"]["id"] == artwork.pk and body["created"] and body["processing_queued"]
    assert response["Location"] == body["status_url"]
    assert body["status_url"].endswith(f"/api/v1/artworks/{artwork.pk}/status/")
    assert any("NOT-A-NOTATION" in w for w in body["warnings"])
    assert artwork.image and artwork.image.read() == painting.read_bytes()
    assert (artwork.date_begin, artwork.date_end) == (1500, 1500)
    assert artwork.artist_names == "Unknown Cretan"
    assert set(ProcessingStep.objects.filter(artwork=artwork).values_list("stage", flat=True)) == set(
        Stage.values
    )
    assert not ProcessingStep.objects.filter(artwork=artwork).exclude(status=StageStatus.QUEUED).exists()
    assert len(callbacks) == 1  # the pipeline task is sent once the transaction commits

    status = api.get(body["status_url"]).json()
    assert status["status"] == ProcessingStatus.PENDING and status["done"] is False
    assert [s["stage"] for s in status["steps"]] == list(Stage.values)


def test_create_with_image_url_queues_processing(api, write_key, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = api.post(
            "/api/v1/artworks/",
            {"source_id": "U-1", "image_url": "https://images.example.org/u1.jpg"},
            format="json",
            **auth(write_key),
        )
    assert response.status_code == 202, response.content
    assert Artwork.objects.get(source="api", source_id="U-1").image_url == "https://images.example.org/u1.jpg"
    assert len(callbacks) == 1


def test_bad_input_is_refused_and_loses_nothing(api, write_key):
    existing = ArtworkFactory(source="partner", source_id="P-2", title="Kept")
    not_an_image = io.BytesIO(b"this is not a picture")
    not_an_image.name = "x.jpg"
    response = api.post(
        "/api/v1/artworks/",
        {"source": "partner", "source_id": "P-2", "title": "Overwritten?", "image": not_an_image},
        format="multipart",
        **auth(write_key),
    )
    err = assert_error(response, 400, "invalid")
    assert "image" in err["details"]
    assert Artwork.objects.get(pk=existing.pk).title == "Kept"

    err = assert_error(
        api.post("/api/v1/artworks/", {"source_id": "N-1"}, format="json", **auth(write_key)), 400, "invalid"
    )
    assert "image" in err["details"]  # nothing to process: refused rather than stored as an empty record
    err = assert_error(
        api.post(
            "/api/v1/artworks/",
            {"source_id": "N-2", "image_url": "https://x.org/a.jpg", "date_begin": 1600, "date_end": 1500},
            format="json",
            **auth(write_key),
        ),
        400,
        "invalid",
    )
    assert "date_end" in err["details"]
    assert not Artwork.objects.filter(source_id__startswith="N-").exists()


def test_patch_changes_fields_and_keeps_the_rest(api, write_key):
    artwork = ArtworkFactory(title="Old", medium="Oil")
    response = api.patch(
        f"/api/v1/artworks/{artwork.pk}/", {"title": "New"}, format="json", **auth(write_key)
    )
    assert response.status_code == 200, response.content
    artwork.refresh_from_db()
    assert (artwork.title, artwork.medium) == ("New", "Oil")
    assert response.json()["processing_queued"] is False


def test_delete_removes_the_artwork_and_its_details(api, write_key):
    artwork = ArtworkFactory()
    detail = DetailFactory(artwork=artwork)
    assert api.delete(f"/api/v1/artworks/{artwork.pk}/", **auth(write_key)).status_code == 204
    assert not Artwork.objects.filter(pk=artwork.pk).exists()
    assert_error(api.get(f"/api/v1/details/{detail.pk}/"), 404, "not_found")
    assert_error(api.get(f"/api/v1/artworks/{artwork.pk}/status/"), 404, "not_found")


@pytest.mark.django_db(transaction=True)
def test_delete_removes_files_once_committed(api, write_key):
    from pathlib import Path

    artwork = ArtworkFactory()
    artwork.image.save("gone.jpg", ContentFile(_jpeg()), save=True)
    path = Path(artwork.image.path)
    assert path.exists()
    assert api.delete(f"/api/v1/artworks/{artwork.pk}/", **auth(write_key)).status_code == 204
    assert not path.exists()
