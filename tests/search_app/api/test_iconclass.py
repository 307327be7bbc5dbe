from __future__ import annotations

import pytest

from tests.search_app.api.conftest import assert_error

pytestmark = pytest.mark.django_db


def test_notation_to_texts(api):
    body = api.get("/api/v1/iconclass/11H(JEROME)/").json()
    assert body["notation"] == "11H(JEROME)"
    assert "Jerome" in body["text"] and "lion" in body["keywords"]
    assert body["path"][:2] == ["1", "11"]
    spaced = api.get("/api/v1/iconclass/25F23(LION)/")
    assert spaced.status_code == 200 and "lion" in spaced.json()["text"].lower()


def test_unknown_notation_is_404(api):
    assert_error(api.get("/api/v1/iconclass/99ZZZ/"), 404, "not_found")
    assert_error(api.get("/api/v1/iconclass/%20/"), 404, "not_found")


def test_text_to_notations_ranks_the_general_subject_first(api):
    body = api.get("/api/v1/iconclass/?q=Jerome hermit&limit=5").json()
    notations = [r["notation"] for r in body["results"]]
    assert notations[0] == "11H(JEROME)"
    assert len(notations) == 5 and all("JEROME" in n for n in notations)


def test_text_search_needs_words_and_finds_nothing_for_nonsense(api):
    assert_error(api.get("/api/v1/iconclass/"), 400, "invalid")
    assert api.get("/api/v1/iconclass/?q=qwxzvbnm").json()["results"] == []


def test_stop_words_alone_find_nothing_and_do_not_narrow(api):
    assert api.get("/api/v1/iconclass/?q=the a of").json()["results"] == []
    with_stop = [
        r["notation"] for r in api.get("/api/v1/iconclass/?q=Jerome with the lion&limit=5").json()["results"]
    ]
    without = [r["notation"] for r in api.get("/api/v1/iconclass/?q=Jerome lion&limit=5").json()["results"]]
    assert with_stop == without and with_stop
