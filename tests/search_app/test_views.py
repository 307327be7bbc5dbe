"""The visitors' pages against the real database, Redis and search pipeline.

No worker runs in these tests, so the pipeline's query encoder and reranker never answer: with short
timeouts the search honestly degrades to its text and ICONCLASS legs, which is what the degraded notice is
for. The real-worker path is covered end to end in test_browser.py.
"""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import pytest
from django.test import AsyncClient, Client

from collections_app.iconography import subject
from collections_app.models import Artwork, Detail, ReviewState
from collections_app.services import ArtworkData, artwork_upsert
from search_app.forms import QUERY_MAX_CHARS
from tests.factories import ArtworkFactory, DetailFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def fast_degrading_search(settings):  # type: ignore[no-untyped-def]
    """No worker answers in these tests: don't wait the production timeouts for it."""
    settings.SEARCH = {**settings.SEARCH, "encode_timeout_s": 0.2, "rerank_timeout_s": 0.2}


@pytest.fixture
def redis_db(redis_client):  # type: ignore[no-untyped-def]
    return redis_client


def _real_artwork(art_dev: Path, image_id: str, **fields: object) -> Artwork:
    data = ArtworkData(source="test-pages", source_id=image_id, **fields)  # type: ignore[arg-type]
    image = art_dev / "images" / f"{image_id}.jpg"
    return artwork_upsert(
        data=data, image_bytes=image.read_bytes(), image_name=image.name, queue_processing=False
    ).artwork


def _text(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


@pytest.fixture
def annunciation(art_dev: Path) -> Artwork:
    artwork = _real_artwork(
        art_dev,
        "A0003",
        title="Saint Jerome in his study",
        artists=["Albrecht Bouts"],
        display_date="c. 1500",
        medium="oil on panel",
        classification="Painting",
        collection="Rijksmuseum",
        dimensions="40 x 30 cm",
        credit_line="Gift of a friend",
        licence="Public domain",
        source_url="https://example.org/record/A0003",
        iconclass=["11H(JEROME)"],
    )
    DetailFactory(
        artwork=artwork,
        level="entity",
        label="golden halo",
        caption="a golden halo around the head",
        x=0.40,
        y=0.05,
        w=0.20,
        h=0.15,
    )
    DetailFactory(
        artwork=artwork,
        level="scene",
        label="study interior",
        caption="a scholar reading at a desk",
        x=0.0,
        y=0.0,
        w=1.0,
        h=1.0,
    )
    DetailFactory(
        artwork=artwork,
        level="entity",
        label="secret skull",
        caption="a skull the cataloger hid",
        x=0.7,
        y=0.6,
        w=0.2,
        h=0.2,
        review_state=ReviewState.HIDDEN,
    )
    return artwork


# --- Search page: no query ---------------------------------------------------------------------------


def test_empty_collection_says_so(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert "The collection is empty for now" in response.content.decode()


def test_without_a_query_recent_artworks_are_shown_with_their_pictures(client: Client, art_dev: Path) -> None:
    older = _real_artwork(art_dev, "A0004", title="Saint John the Baptist")
    newer = _real_artwork(art_dev, "A0005", title="Mary Magdalene")
    response = client.get("/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "Recently added" in html
    assert html.index("Mary Magdalene") < html.index("Saint John the Baptist")  # newest first
    for artwork in (older, newer):
        assert f'href="/artworks/{artwork.pk}/"' in html
        assert f'src="{artwork.image.url}"' in html
    # Pictures from storage are served with a safe type, in production too.
    image = client.get(newer.image.url)
    assert image.status_code == 200
    assert image["Content-Type"] == "image/jpeg"
    assert image["X-Content-Type-Options"] == "nosniff"


def test_the_search_page_is_also_at_search(client: Client) -> None:
    ArtworkFactory(title="A quiet harbour")
    assert "A quiet harbour" in client.get("/search").content.decode()


# --- Search page: validation -------------------------------------------------------------------------


def test_a_ten_thousand_character_query_gets_a_clear_message_and_is_kept(client: Client) -> None:
    response = client.get("/", {"q": "halo " * 2000})
    assert response.status_code == 400
    text = _text(response.content.decode())
    assert f"Please keep this under {QUERY_MAX_CHARS} characters (it has 9999)" in text
    assert "Please check your search" in text


def test_control_characters_are_refused_by_name(client: Client) -> None:
    response = client.get("/", {"q": "halo\x00angel"})
    assert response.status_code == 400
    assert "invisible control character (U+0000)" in response.content.decode()
    response = client.get("/", {"artist": "Bouts\x1b[31m"})
    assert response.status_code == 400
    assert "U+001B" in response.content.decode()


def test_bad_filters_get_messages_next_to_them(client: Client) -> None:
    response = client.get("/", {"q": "halo", "year_from": "1600", "year_to": "1500", "level": "everything"})
    html = response.content.decode()
    assert response.status_code == 400
    assert "The end year comes before the start year." in html
    assert "Choose whole artworks, details, figures and objects, groups or scenes." in html
    response = client.get("/", {"year_from": "long ago"})
    assert "Please give a year as a whole number" in response.content.decode()


def test_html_and_sql_payloads_are_rendered_escaped(client: Client, fast_degrading_search, redis_db) -> None:
    payload = "<script>alert(1)</script>' OR 1=1; DROP TABLE collections_app_artwork; --"
    ArtworkFactory(title="<img src=x onerror=alert(2)>")
    response = client.get("/", {"q": payload, "artist": '"><b>bold</b>'})
    html = response.content.decode()
    assert response.status_code == 200
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>bold</b>" not in html
    assert Artwork.objects.count() == 1  # the payload was data, not SQL
    recent = client.get("/").content.decode()
    assert "<img src=x onerror" not in recent and "&lt;img src=x onerror=alert(2)&gt;" in recent


def test_more_like_an_unknown_artwork_is_a_404_with_a_reason(client: Client) -> None:
    response = client.get("/", {"like_artwork": "999999"})
    assert response.status_code == 404
    assert "That artwork is not in the collection" in response.content.decode()


# --- Search page: results, empty and error states --------------------------------------------------------


def test_detail_search_outlines_the_matching_region(
    client: Client, annunciation: Artwork, fast_degrading_search, redis_db
) -> None:
    ArtworkFactory(title="A still life with lemons")
    response = client.get("/", {"q": "golden halo", "level": "details"})
    html = response.content.decode()
    assert response.status_code == 200
    cards = re.findall(r'<li class="card" data-artwork-id="(\d+)"', html)
    assert cards and cards[0] == str(annunciation.pk)
    halo = Detail.objects.get(label="golden halo")
    # The outline sits on the thumbnail where the detail is (box 0.40, 0.05, 0.20, 0.15).
    assert 'style="left:40.00%;top:5.00%;width:20.00%;height:15.00%"' in html
    assert 'aria-label="Matching figure or object: golden halo"' in html
    # The card links to the artwork with the region to highlight and the query to return to.
    assert (
        f"/artworks/{annunciation.pk}/?detail={halo.pk}&amp;box=0.4000%2C0.0500%2C0.2000%2C0.1500&amp;q=golden+halo"
        in html
    )
    assert re.search(r'class="card__score"[^>]*>\d\.\d\d<', html)
    # No worker answered: the page says the answer is less precise than usual.
    assert "Less precise than usual" in html


def test_an_artworks_search_outlines_where_the_named_thing_is_placed(
    client: Client, annunciation: Artwork, fast_degrading_search, redis_db
) -> None:
    from collections_app.models import Placement

    Placement.objects.create(artwork=annunciation, label="golden halo", x=0.45, y=0.1, w=0.1, h=0.1)
    html = client.get("/", {"q": "golden halo"}).content.decode()
    assert 'style="left:45.00%;top:10.00%;width:10.00%;height:10.00%"' in html
    assert 'aria-label="Matching detail: golden halo"' in html
    # No detail of its own: the link carries the box alone, which the artwork page outlines.
    assert f"/artworks/{annunciation.pk}/?box=0.4500%2C0.1000%2C0.1000%2C0.1000&amp;q=golden+halo" in html


def test_filters_are_kept_in_the_shareable_url(
    client: Client, annunciation: Artwork, fast_degrading_search, redis_db
) -> None:
    params = {
        "q": "halo",
        "level": "entity",
        "artist": "Bouts",
        "year_from": "1400",
        "year_to": "1600",
        "classification": "Painting",
        "medium": "oil",
        "collection": "Rijks",
    }
    response = client.get("/", params)
    html = response.content.decode()
    assert response.status_code == 200
    # The form shows what was asked, and the URL the scroll script extends carries every parameter.
    for name, value in params.items():
        if name != "level":
            assert f'name="{name}"' in html and f'value="{value}"' in html
    assert 'id="level-entity" checked' in html
    data_params = unescape(re.search(r'data-params="([^"]*)"', html).group(1))  # type: ignore[union-attr]
    assert data_params == (
        "q=halo&level=entity&artist=Bouts&year_from=1400&year_to=1600&classification=Painting&medium=oil&collection=Rijks"
    )
    assert "(7 in use)" not in html and "(6 in use)" in html  # six filters; the level is not one


def test_nothing_matched_explains_and_suggests(
    client: Client, annunciation: Artwork, fast_degrading_search, redis_db
) -> None:
    response = client.get("/", {"q": "golden halo", "level": "details", "artist": "Nobody Atall"})
    html = response.content.decode()
    text = _text(html)
    assert response.status_code == 200
    assert "Nothing matched golden halo with these filters" in text
    assert "Search again without the filters" in text
    assert "Search whole artworks instead" in text
    assert 'href="/?q=golden+halo&amp;level=details"' in html  # the same search, filters dropped
    assert not re.search(r'<li class="card" data-artwork-id="\d+"', html)


def test_a_failing_search_shows_the_error_state_not_a_500(
    client: Client, monkeypatch: pytest.MonkeyPatch, annunciation: Artwork
) -> None:
    # Fault injection: the test is about the page's error state, so the pipeline is made to fail.
    async def broken_search(query, *, request_key=None):  # type: ignore[no-untyped-def]
        raise ConnectionError("index unreachable")

    monkeypatch.setattr("search_app.pipeline.search", broken_search)
    response = client.get("/", {"q": "halo"})
    assert response.status_code == 503
    html = response.content.decode()
    assert "Search is unavailable" in html
    assert 'value="halo"' in html  # the visitor's search is kept


def test_the_page_view_is_async_and_tags_the_visitor(
    annunciation: Artwork, fast_degrading_search, redis_db
) -> None:
    import asyncio

    from search_app import views

    assert asyncio.iscoroutinefunction(views.search_page)
    client = AsyncClient()
    response = asyncio.run(client.get("/", {"q": "halo"}))
    assert response.status_code == 200
    cookie = response.cookies["semart_client"]
    assert re.fullmatch(r"[0-9a-f]{32}", cookie.value) and cookie["httponly"]


def test_a_visitors_new_search_supersedes_their_previous_one(
    client: Client, annunciation: Artwork, fast_degrading_search, redis_db
) -> None:
    from search_app import request_control

    visitor = "ab" * 16
    client.cookies["semart_client"] = visitor
    client.get("/", {"q": "halo"})
    first = redis_db.get(request_control.active_key(f"visitor:{visitor}"))
    client.get("/", {"q": "skull"})
    second = redis_db.get(request_control.active_key(f"visitor:{visitor}"))
    assert first and second and first != second
    # The page told the first search to stop: a rerank still running for it would quit between batches.
    assert redis_db.exists(request_control.stop_key(first.decode()))


def test_more_results_link_continues_where_the_page_ended(
    client: Client, art_dev: Path, fast_degrading_search, redis_db
) -> None:
    for n in range(30):
        artwork = ArtworkFactory(title=f"Angel with a lily {n}")
        DetailFactory(artwork=artwork, label="lily", caption="an angel holding a lily")
    first = client.get("/", {"q": "lily"}).content.decode()
    assert len(re.findall(r'<li class="card" data-artwork-id="\d+"', first)) == 24
    more = re.search(r'href="([^"]+)" data-more', first)
    assert more is not None
    second = client.get(unescape(more.group(1))).content.decode()
    first_ids = set(re.findall(r'data-artwork-id="(\d+)"', first))
    second_ids = set(re.findall(r'data-artwork-id="(\d+)"', second))
    assert len(second_ids) == 6 and not first_ids & second_ids
    assert "Back to the first results" in second


def test_more_like_this_ranks_by_the_stored_image_embeddings(
    client: Client, fast_degrading_search, redis_db
) -> None:
    import numpy as np

    from collections_app.models import ArtworkEmbedding
    from search_app.query_encoding import embedder_model_key

    model_key = embedder_model_key()
    rng = np.random.default_rng(7)
    base = rng.normal(size=384).astype(np.float32)
    reference, near, far = (ArtworkFactory(title=t) for t in ("The reference", "A near cousin", "A stranger"))
    for artwork, vector in ((reference, base), (near, base + 0.3 * rng.normal(size=384)), (far, -base)):
        vector = np.asarray(vector, dtype=np.float32)
        ArtworkEmbedding.objects.create(
            artwork=artwork,
            model_key=model_key,
            kind="image",
            dim=384,
            vector=vector / np.linalg.norm(vector),
        )
    html = client.get("/", {"like_artwork": reference.pk}).content.decode()
    assert "Artworks like" in html and "<cite>The reference</cite>" in html
    ids = re.findall(r'<li class="card" data-artwork-id="(\d+)"', html)
    assert str(reference.pk) not in ids  # not "like itself"
    assert ids.index(str(near.pk)) < ids.index(str(far.pk)) if str(far.pk) in ids else ids[0] == str(near.pk)
    # The search form keeps the reference, so changing the level searches like it again.
    assert f'name="like_artwork" value="{reference.pk}"' in html


def _first_with_box(art_dev: Path, label: str, *, without: str = "") -> tuple[str, list[float]]:
    import json

    with (art_dev / "metadata.jsonl").open() as lines:
        for line in lines:
            row = json.loads(line)
            labels = {b["label"]: b["bbox_rel"] for b in row.get("boxes") or []}
            if label in labels and without not in labels:
                return row["id"], labels[label]
    raise AssertionError(f"no art-dev image with a {label!r} box")


@pytest.mark.django_db(transaction=True)
def test_with_a_real_worker_the_page_is_reranked_and_outlines_the_match(art_dev: Path, celery_worker) -> None:  # type: ignore[no-untyped-def]
    """The whole path: the async page, the pipeline, and a real Celery worker encoding the query and
    reranking with the offline models, over details whose vectors the real embedder made."""
    from PIL import Image

    from collections_app.models import DetailEmbedding
    from workers.inference.registry import get_embedder

    embedder = get_embedder()
    made = []
    for image_id, box, label in (
        (*_first_with_box(art_dev, "aura"), "golden halo"),
        (*_first_with_box(art_dev, "book", without="aura"), "open book"),
    ):
        artwork = _real_artwork(art_dev, image_id, title=f"Icon {image_id}")
        x, y, w, h = box
        detail = DetailFactory(
            artwork=artwork,
            level="entity",
            label=label,
            caption=f"a {label}",
            x=x,
            y=y,
            w=min(w, 1 - x),
            h=min(h, 1 - y),
        )
        with Image.open(artwork.image.path) as picture:
            crop_vector = embedder.embed_regions(picture.convert("RGB"), [detail.box])[0]
        caption_vector = embedder.embed_texts([detail.caption])[0]
        for kind, vector in (("image", crop_vector), ("text", caption_vector)):
            DetailEmbedding.objects.create(
                detail=detail,
                artwork=artwork,
                level=detail.level,
                model_key=embedder.model_key,
                kind=kind,
                dim=int(vector.size),
                vector=vector,
            )
        made.append((artwork, detail))
    (halo_artwork, halo), _ = made

    response = Client().get("/", {"q": "golden halo", "level": "details"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "Less precise than usual" not in html  # the worker encoded and reranked
    ids = re.findall(r'<li class="card" data-artwork-id="(\d+)"', html)
    assert ids[0] == str(halo_artwork.pk)
    assert f"?detail={halo.pk}&amp;" in html


# --- Artwork page -----------------------------------------------------------------------------------------


def test_artwork_page_shows_image_details_metadata_and_subjects(
    client: Client, annunciation: Artwork
) -> None:
    response = client.get(f"/artworks/{annunciation.pk}/")
    html = response.content.decode()
    text = _text(html)
    assert response.status_code == 200
    assert f'src="{annunciation.image.url}"' in html
    for value in (
        "Saint Jerome in his study",
        "Albrecht Bouts",
        "c. 1500",
        "oil on panel",
        "40 x 30 cm",
        "Gift of a friend",
        "Public domain",
        "Rijksmuseum",
    ):
        assert value in text
    assert 'href="https://example.org/record/A0003"' in html
    # ICONCLASS subject with its text from the iconclass package.
    jerome = subject("11H(JEROME)")
    assert jerome is not None and jerome.text
    assert "11H(JEROME)" in text and jerome.text in text
    # Visible details as boxes with their level and caption; levels can be toggled.
    assert 'aria-label="Figure or object: golden halo. a golden halo around the head"' in html
    assert 'aria-label="Scene: study interior. a scholar reading at a desk"' in html
    assert 'id="show-entity"' in html and 'id="show-scene"' in html
    assert f'href="/?like_artwork={annunciation.pk}"' in html  # more like this


def test_hidden_details_never_reach_visitors(client: Client, annunciation: Artwork) -> None:
    hidden = Detail.objects.get(label="secret skull")
    # Even a search link that carries the hidden detail's box outlines nothing.
    html = client.get(
        f"/artworks/{annunciation.pk}/", {"detail": hidden.pk, "box": "0.7,0.6,0.2,0.2"}
    ).content.decode()
    assert "secret skull" not in html and "the cataloger hid" not in html
    assert f'data-detail-id="{hidden.pk}"' not in html
    assert "box--match" not in html and "could not be read" not in html


def test_arriving_from_a_search_highlights_the_matched_detail(client: Client, annunciation: Artwork) -> None:
    halo = Detail.objects.get(label="golden halo")
    html = client.get(
        f"/artworks/{annunciation.pk}/", {"detail": halo.pk, "q": "golden halo"}
    ).content.decode()
    match = re.search(
        r'<button type="button" class="box box--entity box--match" data-detail-id="(\d+)"', html
    )
    assert match and match.group(1) == str(halo.pk)
    assert html.count('box--match"') == 1
    assert "is where" in html and "Back to results for" in html
    assert 'href="/?q=golden+halo"' in html


def test_arriving_with_a_box_outlines_that_region(client: Client, annunciation: Artwork) -> None:
    html = client.get(f"/artworks/{annunciation.pk}/", {"box": "0.25,0.5,0.5,0.25"}).content.decode()
    assert (
        'class="box box--match box--region" style="left:25.00%;top:50.00%;width:50.00%;height:25.00%"' in html
    )
    bad = client.get(f"/artworks/{annunciation.pk}/", {"box": "nan,1e9,<x>,2"})
    assert bad.status_code == 200
    assert "could not be read" in bad.content.decode() and "box--region" not in bad.content.decode()


def test_unknown_artworks_are_404(client: Client) -> None:
    response = client.get("/artworks/987654/")
    assert response.status_code == 404
    assert "Nothing here" in response.content.decode()
    assert client.get("/artworks/not-a-number/").status_code == 404


# --- Media ------------------------------------------------------------------------------------------------


def test_media_view_serves_only_images_from_the_images_folders(client: Client, settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    media = Path(settings.MEDIA_ROOT)
    (media / "thumbnails").mkdir(parents=True)
    (media / "private").mkdir()
    (media / "thumbnails" / "fake.jpg").write_bytes(b"<html><script>alert(1)</script></html>")
    (media / "thumbnails" / "notes.html").write_text("<script>alert(1)</script>")
    (media / "private" / "secret.jpg").write_bytes(b"\xff\xd8\xff\xe0secret")
    assert client.get("/media/thumbnails/fake.jpg").status_code == 404  # not really a JPEG
    assert client.get("/media/thumbnails/notes.html").status_code == 404
    assert client.get("/media/private/secret.jpg").status_code == 404
    assert client.get("/media/thumbnails/../private/secret.jpg").status_code == 404
    assert client.get("/media/thumbnails/missing.jpg").status_code == 404
