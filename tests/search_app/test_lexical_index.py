"""The full-text leg at scale: its artwork candidates come through GIN indexes (migration collections_app
0003) instead of a document built for every artwork, and that prefilter loses no match."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.backends.utils import CursorWrapper

from search_app.iconclass_expansion import forget_catalogue_notations
from search_app.retrieval import lexical_leg
from tests.factories import ArtistFactory, ArtworkFactory, DetailFactory

pytestmark = pytest.mark.django_db


def test_words_spread_over_title_artist_and_iconclass_still_match_together() -> None:
    forget_catalogue_notations()
    both = ArtworkFactory(
        title="A saint in the desert", iconclass=["11H(JEROME)"]
    )  # "hermit": ICONCLASS text
    both.artists.add(ArtistFactory(name="Hans Memling"))
    ArtworkFactory(title="A saint in the desert")  # no hermit anywhere
    ArtworkFactory(title="Untitled", iconclass=["11H(JEROME)"])  # no saint anywhere

    assert [h.artwork_id for h in lexical_leg(text="saint hermit", limit=10)] == [both.pk]
    assert [h.artwork_id for h in lexical_leg(text="Memling desert", limit=10)] == [both.pk]


def test_a_query_of_negated_words_only_keeps_the_full_scan() -> None:
    forget_catalogue_notations()
    blue = ArtworkFactory(title="Blue madonna")
    red = ArtworkFactory(title="Red madonna")
    assert {h.artwork_id for h in lexical_leg(text="-blue", limit=10)} >= {red.pk}
    assert blue.pk not in {h.artwork_id for h in lexical_leg(text="-blue", limit=10)}


def test_the_artwork_candidates_come_through_the_text_indexes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    forget_catalogue_notations()
    artwork = ArtworkFactory(title="Saint Jerome in his study")
    DetailFactory(artwork=artwork, label="lion", caption="a lion asleep")
    seen: list[tuple[str, object]] = []
    execute = CursorWrapper.execute

    def spy(self, sql, params=None):  # type: ignore[no-untyped-def]
        if "websearch_to_tsquery" in sql and "anyq" in sql:
            seen.append((sql, params))
        return execute(self, sql, params)

    monkeypatch.setattr(CursorWrapper, "execute", spy)
    assert [h.artwork_id for h in lexical_leg(text="Jerome lion", limit=10)] == [artwork.pk]
    monkeypatch.undo()
    sql, params = seen[0]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a handful of rows: the planner would scan them
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "artwork_own_text_fts" in plan
    assert "artist_name_fts" in plan
