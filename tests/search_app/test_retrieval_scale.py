"""The first stage's legs at scale: the full-text leg's artwork candidates come through GIN indexes
(migration collections_app 0003) instead of a document built for every artwork, and that prefilter loses no
match; an unfiltered vector leg over a large collection stops counting rows once it knows it is large."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection
from django.db.backends.utils import CursorWrapper

from search_app import retrieval
from search_app.iconclass_expansion import forget_catalogue_notations
from search_app.retrieval import lexical_leg, vector_leg
from search_app.types import SearchFilters
from tests.factories import ArtistFactory, ArtworkFactory, DetailFactory
from tests.search_app.conftest import MODEL_KEY, embed_artwork

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
        # A handful of rows: the planner would scan them, or walk the primary key after earlier tests' rows
        # changed its statistics. Bitmap scans stay allowed, which is how a GIN index is read.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute("SET LOCAL enable_indexonlyscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "artwork_own_text_fts" in plan
    assert "artist_name_fts" in plan


def _count_queries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    counts: list[str] = []
    execute = CursorWrapper.execute

    def spy(self, sql, params=None):  # type: ignore[no-untyped-def]
        if sql.startswith("SELECT count(*)"):
            counts.append(sql)
        return execute(self, sql, params)

    monkeypatch.setattr(CursorWrapper, "execute", spy)
    return counts


def test_an_unfiltered_leg_counts_a_large_collection_once_and_a_filtered_one_every_time(
    settings, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    settings.SEARCH = {**settings.SEARCH, "exact_scan_below": 5}
    monkeypatch.setattr(retrieval, "_known_large", {})
    rng = np.random.default_rng(5)
    for i in range(8):
        embed_artwork(ArtworkFactory(date_begin=1500 + i, date_end=1500 + i), rng.standard_normal(8))
    counts = _count_queries(monkeypatch)
    query = rng.standard_normal(8).astype(np.float32)
    leg = {"vector": query, "model_key": MODEL_KEY, "target": "artwork", "kind": "image", "limit": 3}

    assert len(vector_leg(**leg)) == 3
    assert len(vector_leg(**leg)) == 3
    assert len(counts) == 1  # 8 rows >= 5: large, remembered
    filtered = vector_leg(**leg, filters=SearchFilters(year_from=1506))
    assert len(filtered) == 2 and len(counts) == 2  # a filter is counted every time (2 rows: exact scan)
    monkeypatch.setattr(retrieval, "LARGE_KNOWN_FOR_S", -1.0)
    monkeypatch.setattr(retrieval, "_known_large", {})
    vector_leg(**leg)
    vector_leg(**leg)
    assert len(counts) == 4  # remembered for no time: counted again each time


def test_the_trigram_fallback_comes_through_its_indexes_and_keeps_misspellings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    forget_catalogue_notations()
    jerome = ArtworkFactory(title="Saint Jerome in his study")
    DetailFactory(artwork=ArtworkFactory(title="Untitled"), label="skull", caption="a skull on a desk")
    seen: list[tuple[str, object]] = []
    execute = CursorWrapper.execute

    def spy(self, sql, params=None):  # type: ignore[no-untyped-def]
        if "DISTINCT ON" in sql and "word_similarity(" in sql:
            seen.append((sql, params))
        return execute(self, sql, params)

    monkeypatch.setattr(CursorWrapper, "execute", spy)
    assert [h.artwork_id for h in lexical_leg(text="Jerom studdy", limit=10)] == [jerome.pk]
    monkeypatch.undo()
    sql, params = seen[0]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "artwork_title_description_trgm" in plan  # (details: a few rows, the planner takes other indexes)
