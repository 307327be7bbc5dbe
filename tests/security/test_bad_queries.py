"""Hostile text in queries and in the catalogue, on every page that shows it: a clear 400 for what cannot be
searched, and everything else rendered as text, never as markup or SQL.

Already covered elsewhere (not repeated here): the search page's 10,000-character query, control characters
by name, bad filters, and an HTML/SQL payload in q and artist (tests/search_app/test_views.py); bad level and
year on /search.json (tests/search_app/test_search_json.py); the API's validation
(tests/search_app/api/test_search.py, test_artworks.py, and the schemathesis run in test_schemathesis.py).
"""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collections_app.models import Artist, Artwork
from search_app.forms import QUERY_MAX_CHARS, SearchForm
from search_app.query_parsing import QueryError, query_from_params
from tests.factories import ArtworkFactory, DetailFactory

pytestmark = pytest.mark.django_db

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'
SQL = "' OR 1=1; DROP TABLE collections_app_artwork; --"
# Pieces the full-text and trigram legs parse: tsquery operators, LIKE wildcards, quotes, backslashes.
NASTY = [
    XSS,
    SQL,
    "!",
    "&",
    "|",
    ":*",
    "<->",
    "(",
    ")",
    '"',
    "'",
    "\\",
    "%",
    "_",
    "-",
    "--",
    "NOT",
    "OR",
    "😀",
    "ß",
]


@pytest.fixture
def quick_search(settings, redis_client):  # type: ignore[no-untyped-def]
    """No worker runs here: the search degrades to its text legs. Don't wait the production timeouts."""
    settings.SEARCH = {**settings.SEARCH, "encode_timeout_s": 0.1, "rerank_timeout_s": 0.1}
    return redis_client


# --- /search.json: the same limits as the page ----------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"q": "halo " * 2000}, "q is 10000 characters long"),
        ({"q": "halo\x00angel"}, r"control character \(U\+0000\)"),
        ({"q": "angel", "artist": "Bouts\x1b[31m"}, r"artist contains .*U\+001B"),
        ({"q": "angel", "medium": "oil" * 100}, "medium is 300 characters long"),
        ({"q": "angel", "level": "x" * 5000}, "level is 5000 characters long"),
    ],
    ids=["10k-query", "nul", "escape-sequence", "long-filter", "long-level"],
)
def test_search_json_refuses_what_the_page_refuses(
    client: Client, params: dict[str, str], message: str
) -> None:
    response = client.get("/search.json", params)
    assert response.status_code == 400
    assert re.search(message, response.json()["error"])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=QUERY_MAX_CHARS + 20))
def test_the_page_and_the_json_endpoint_agree_on_any_text(text: str) -> None:
    form = SearchForm({"q": text})
    try:
        query = query_from_params({"q": text})
    except QueryError:
        json_ok = False
    else:
        json_ok = True
        assert "\x00" not in query.text
    # The page also accepts a query that is only exclusions or empty; the JSON endpoint needs something
    # to look for. Both refuse the same overlong and control-character text.
    if not form.is_valid():
        assert not json_ok
    elif json_ok:
        assert form.is_valid()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(NASTY), min_size=1, max_size=6).map(" ".join))
def test_nasty_queries_answer_400_or_200_never_500(client: Client, quick_search, text: str) -> None:  # type: ignore[no-untyped-def]
    ArtworkFactory(title="A golden halo", description="An angel holding a lily")
    for url in ("/search.json", "/"):
        response = client.get(url, {"q": text, "artist": text[:200], "medium": text[:200]})
        assert response.status_code in (200, 400), (url, text, response.status_code)
    assert Artwork.objects.filter(title="A golden halo").exists()  # the payload was data, not SQL


def test_search_json_returns_payloads_as_json_data(client: Client, quick_search) -> None:  # type: ignore[no-untyped-def]
    ArtworkFactory(title=XSS)
    response = client.get("/search.json", {"q": f"script {XSS}"})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json()["query"]["text"].startswith("script <script>")  # kept as data, not rendered


# --- Stored payloads, shown escaped everywhere ----------------------------------------------------------


@pytest.fixture
def hostile_artwork() -> Artwork:
    artwork = Artwork.objects.create(
        source="test",
        source_id="xss",
        title=XSS,
        description=f"{XSS}\n\nsecond paragraph",
        medium=XSS,
        credit_line=XSS,
        display_date=XSS,
        source_url="javascript:alert(document.cookie)",
    )
    artwork.artists.set([Artist.objects.create(name=XSS, sort_name=XSS)])
    DetailFactory(artwork=artwork, label=XSS, caption=XSS)
    return artwork


def assert_escaped(html: str) -> None:
    assert "<script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;" in html


def test_the_artwork_page_escapes_the_record_and_the_query(client: Client, hostile_artwork: Artwork) -> None:
    response = client.get(f"/artworks/{hostile_artwork.pk}/", {"q": XSS, "box": XSS, "detail": XSS})
    html = response.content.decode()
    assert response.status_code == 200
    assert_escaped(html)
    assert "javascript:" not in html  # a catalogue link that is not http(s) is not made clickable


def test_the_search_page_escapes_stored_payloads_in_results(client: Client, hostile_artwork: Artwork) -> None:
    html = client.get("/").content.decode()  # recent artworks: the stored title and artist on a card
    assert_escaped(html)
    html = client.get("/", {"classification": XSS, "medium": XSS, "collection": XSS}).content.decode()
    assert_escaped(html)


def test_the_api_answers_payloads_as_json(client: Client, hostile_artwork: Artwork) -> None:
    response = client.get(f"/api/v1/artworks/{hostile_artwork.pk}/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response.json()["title"] == XSS  # the data as stored; a client renders it as text


@pytest.mark.parametrize(
    ("params", "field"),
    [({"q": "x" * 10_000}, "q"), ({"q": "angel\x00"}, "q"), ({"q": "angel", "artist": "a\x00b"}, "artist")],
    ids=["10k-query", "nul-query", "nul-filter"],
)
def test_the_api_search_refuses_overlong_and_nul_text(
    client: Client, params: dict[str, str], field: str
) -> None:
    response = client.get("/api/v1/search/", params)
    assert response.status_code == 400
    assert field in response.json()["error"]["details"]


@pytest.fixture
def staff_client(django_user_model) -> Client:  # type: ignore[no-untyped-def]
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user(username="cataloger", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name="Cataloger"))
    client = Client()
    client.force_login(user)
    return client


def test_the_admin_escapes_stored_payloads(staff_client: Client, hostile_artwork: Artwork) -> None:
    changelist = reverse("admin:collections_app_artwork_changelist")
    for url in (
        changelist,
        reverse("admin:collections_app_artwork_change", args=[hostile_artwork.pk]),
        reverse("admin:collections_app_detail_changelist"),
        reverse("admin:collections_app_artist_changelist"),
    ):
        response = staff_client.get(url)
        assert response.status_code == 200, url
        assert_escaped(response.content.decode())
    response = staff_client.get(changelist, {"q": f"{SQL} {XSS}"})
    assert response.status_code == 200
    assert "<script>alert" not in response.content.decode()
    assert Artwork.objects.filter(pk=hostile_artwork.pk).exists()
    response = staff_client.get(changelist, {"q": "halo\x00"})
    assert response.status_code in (200, 400)
