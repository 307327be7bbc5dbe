"""Searching by an uploaded picture, with the real offline embedder: in process, through a real worker, from
the page's upload form and through the API. Pictures are real art-dev images, read in place."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from collections_app.models import ArtworkEmbedding
from search_app.pipeline import search_sync
from search_app.query_encoding import cached_image_vector, stash_query_image
from search_app.query_parsing import QueryError
from search_app.types import SearchQuery
from tests.factories import ArtworkFactory
from workers.inference.registry import get_embedder

IMAGES = ("A0003.jpg", "A0004.jpg", "A0005.jpg", "A0086.jpg", "A0262.jpg", "A0263.jpg")


@pytest.fixture
def pictures(art_dev: Path, clean_cache):  # type: ignore[no-untyped-def]
    """Six artworks whose whole-image vectors the real embedder made from their pictures."""
    embedder = get_embedder()
    made = {}
    for name in IMAGES:
        path = art_dev / "images" / name
        artwork = ArtworkFactory(title=f"Picture {path.stem}")
        with Image.open(path) as image:
            vector = embedder.embed_images([image.convert("RGB")])[0]
        ArtworkEmbedding.objects.create(
            artwork=artwork, model_key=embedder.model_key, kind="image", dim=vector.size, vector=vector
        )
        made[name] = (artwork, path)
    return made


@pytest.mark.django_db
@pytest.mark.parametrize("rerank", [False, True])
def test_an_uploaded_picture_finds_itself_first(pictures, rerank) -> None:
    artwork, path = pictures["A0004.jpg"]
    response = search_sync(SearchQuery(image_bytes=path.read_bytes(), rerank=rerank), in_process=True)
    assert response.hits[0].artwork_id == artwork.pk
    assert response.query.like_image and response.query.image_bytes is None  # named by digest from here on
    assert cached_image_vector(response.query.like_image, model_key=get_embedder().model_key) is not None


@pytest.mark.django_db(transaction=True)
def test_the_web_path_encodes_the_picture_on_a_real_worker(pictures, celery_worker, settings) -> None:
    settings.SEARCH = {**settings.SEARCH, "encode_timeout_s": 30, "rerank_timeout_s": 30}
    artwork, path = pictures["A0262.jpg"]
    # The async pipeline, as the web runs it.
    response = search_sync(SearchQuery(image_bytes=path.read_bytes()))
    assert response.degraded == ""
    assert response.reranked
    assert response.hits[0].artwork_id == artwork.pk


@pytest.mark.django_db
def test_bad_and_expired_pictures_get_clear_errors(clean_cache) -> None:
    with pytest.raises(QueryError, match="HTML"):
        page = b"<!doctype html><html><body>login</body></html>"
        search_sync(SearchQuery(image_bytes=page), in_process=True)
    with pytest.raises(QueryError, match="empty|give text"):
        search_sync(SearchQuery(image_bytes=b""), in_process=True)
    with pytest.raises(QueryError, match="expired"):
        search_sync(SearchQuery(like_image="0" * 64), in_process=True)
    with pytest.raises(QueryError, match="one picture"):
        search_sync(SearchQuery(like_image="0" * 64, like_artwork_id=1), in_process=True)


@pytest.mark.django_db
def test_the_page_uploads_then_searches_from_a_shareable_url(client, pictures) -> None:
    artwork, path = pictures["A0086.jpg"]
    with path.open("rb") as fh:
        posted = client.post("/search/by-picture", {"picture": fh, "level": "artworks"})
    assert posted.status_code == 303
    location = posted["Location"]
    digest = stash_query_image(path.read_bytes())
    assert location == f"/?image={digest}"
    # No worker runs here: encode once in process (as a worker would), then the page answers from the cache.
    search_sync(SearchQuery(like_image=digest, rerank=False), in_process=True)
    page = client.get(location)
    assert page.status_code == 200
    html = page.content.decode()
    assert "your picture" in html
    assert html.index(f"/artworks/{artwork.pk}/") < min(
        html.index(f"/artworks/{other.pk}/") for other, _ in pictures.values() if other != artwork
    )
    assert f'name="image" value="{digest}"' in html  # the level switch and filters keep the picture


@pytest.mark.django_db
def test_the_page_explains_a_refused_upload(client, clean_cache) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    fake = SimpleUploadedFile(
        "cat.jpg", b"<svg xmlns='http://www.w3.org/2000/svg'><script>x()</script></svg>"
    )
    response = client.post("/search/by-picture", {"picture": fake})
    assert response.status_code == 400
    html = response.content.decode()
    assert "cannot be searched by" in html and "<script>x()" not in html
    missing = client.post("/search/by-picture", {})
    assert missing.status_code == 400 and "This field is required" in missing.content.decode()
    assert client.get("/search/by-picture").status_code == 405
    expired = client.get("/?image=" + "a" * 64)
    assert expired.status_code == 400 and "upload it again" in expired.content.decode()
