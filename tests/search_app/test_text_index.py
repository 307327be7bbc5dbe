"""The in-memory word index (SEARCH["text_index"] = "memory"): BM25 over PostgreSQL's own lexemes, the same
matches as the PostgreSQL leg, filters inside, and kept in step with the catalogue."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection

from collections_app.models import Artwork, Detail
from search_app import text_index
from search_app.iconclass_expansion import forget_catalogue_notations
from search_app.pipeline import first_stage
from search_app.retrieval import iconclass_leg, lexical_leg
from search_app.text_index import Postings, Vocabulary, WordQuery, query_lexemes, top_positions
from search_app.types import SearchFilters, SearchQuery
from tests.factories import ArtistFactory, ArtworkFactory, DetailFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def memory_words(settings, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """The memory index chosen, saved under a fresh data dir, no background sync (a thread on its own
    connection would not see the test's uncommitted rows)."""
    settings.SEMART_DATA_DIR = tmp_path
    settings.SEARCH = {**settings.SEARCH, "text_index": "memory"}
    monkeypatch.setattr(text_index, "SYNC_EVERY_S", 1e12)
    forget_catalogue_notations()
    text_index.reset()
    yield
    text_index.reset()


def words(text: str, **kwargs) -> list[tuple[int, int | None]]:  # type: ignore[no-untyped-def]
    return [(h.artwork_id, h.detail_id) for h in lexical_leg(text=text, limit=10, **kwargs)]


def test_bm25_prefers_rare_words_and_short_documents() -> None:
    # docs: 0 "lion lion saint", 1 "saint", 2 "saint lion desert hermit study"
    postings = Postings.build(
        np.array([0, 0, 1, 2, 2, 2, 2, 2]),
        ["lion", "saint", "saint", "saint", "lion", "desert", "hermit", "study"],
        np.array([2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
        3,
    )
    lion = postings.scores(["lion"], [], match_all=True)
    assert lion[1] == 0 and lion[0] > lion[2] > 0, "twice in a short document beats once in a long one"
    both = postings.scores(["saint", "lion"], [], match_all=True)
    assert both[1] == 0 and both[0] > 0, "every word must be held"
    either = postings.scores(["saint", "lion"], [], match_all=False)
    assert either[1] > 0
    assert postings.scores(["saint"], ["desert"], match_all=True)[2] == -np.inf
    assert not postings.scores(["unknown"], [], match_all=True).any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_positions_matches_a_full_sort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.random(50_000).astype(np.float32)
    scores[rng.random(50_000) < 0.5] = 0.0
    scores[:7] = scores[7]  # ties, broken by position like the full sort
    expected = sorted(np.flatnonzero(scores > 0), key=lambda i: (-scores[i], i))[:100]
    assert top_positions(scores, 100).tolist() == expected


def test_vocabulary_corrects_by_trigram_similarity_as_pg_trgm_does(django_db_blocker) -> None:
    vocabulary = Vocabulary(["jerom", "studi", "lion", "halo", "hall"])
    assert vocabulary.closest("jeromm") == "jerom"
    assert vocabulary.closest("studdi") == "studi"
    assert vocabulary.closest("halos") == "halo"
    assert vocabulary.closest("xylophon") is None
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute("SELECT similarity('jeromm', 'jerom'), similarity('studdi', 'studi')")
        assert [round(v, 3) for v in cursor.fetchone()] == [0.625, 0.625], "the same measure as pg_trgm"


def test_query_lexemes_are_postgresql_stems_with_negations_and_or() -> None:
    assert query_lexemes('the Virgin Mary -child "golden halos"') == WordQuery(
        positive=["virgin", "mari", "golden", "halo"], negative=["child"], match_all=True
    )
    assert query_lexemes("lion or dragon").match_all is False


def test_no_saved_index_means_the_postgresql_leg_answers() -> None:
    jerome = ArtworkFactory(title="Saint Jerome in his study")
    assert text_index.current_index() is None
    assert words("Jerome") == [(jerome.pk, None)]


def test_memory_leg_finds_what_the_postgresql_leg_finds() -> None:
    jerome = ArtworkFactory(title="Saint Jerome in his study", description="A lion sleeps by the desk.")
    painter = ArtworkFactory(title="Portrait of a merchant")
    painter.artists.add(ArtistFactory(name="Hans Holbein"))
    wings = ArtworkFactory(title="Untitled icon")
    wing = DetailFactory(artwork=wings, label="angel_wings", caption="golden wings of an angel")
    hermit = ArtworkFactory(title="Untitled", iconclass=["11H(JEROME)"])
    ArtworkFactory(title="Still life with fruit")
    text_index.rebuild_and_save()

    assert words("desk") == [(jerome.pk, None)]
    assert {a for a, _ in words("lion")} == {jerome.pk, hermit.pk}, "Jerome's ICONCLASS text names his lion"
    assert words("Holbein") == [(painter.pk, None)]
    assert words("angel wings") == [(wings.pk, wing.pk)]
    assert words("hermit") == [(hermit.pk, None)], "ICONCLASS texts of the artwork's notations"
    assert words("Jerome", level="entity") == [], "at a detail level only regions answer"
    assert words("Jeromme studdy") == [(jerome.pk, None)], "words nothing holds: the closest known ones"
    with pytest.MonkeyPatch.context() as mp:  # the same answers from PostgreSQL
        mp.setattr(text_index, "current_index", lambda: None)
        assert words("desk") == [(jerome.pk, None)]
        assert {a for a, _ in words("lion")} == {jerome.pk, hermit.pk}
        assert words("angel wings") == [(wings.pk, wing.pk)]


def test_every_word_must_match_then_any_word_before_trigrams() -> None:
    both = ArtworkFactory(title="Saint Jerome and the lion")
    one = ArtworkFactory(title="A lion in the desert")
    text_index.rebuild_and_save()
    assert words("Jerome lion") == [(both.pk, None)]
    # No document holds "lion" and "castle": those holding either are ranked.
    assert {a for a, _ in words("lion castle")} == {both.pk, one.pk}
    assert words("lion -desert") == [(both.pk, None)]


def test_filters_and_levels_apply_inside_the_memory_leg() -> None:
    old = ArtworkFactory(title="A lion", date_begin=1400, date_end=1410)
    new = ArtworkFactory(title="A lion", date_begin=1800, date_end=1805)
    scene = DetailFactory(artwork=old, level="scene", caption="a lion by a tree")
    entity = DetailFactory(artwork=new, level="entity", caption="a lion")
    text_index.rebuild_and_save()
    assert words("lion", filters=SearchFilters(year_from=1700)) == [(new.pk, entity.pk)]
    assert words("lion", level="scene") == [(old.pk, scene.pk)]


def test_hidden_or_deleted_rows_never_show_before_the_next_sync() -> None:
    kept = ArtworkFactory(title="A dragon")
    gone = ArtworkFactory(title="A dragon too")
    region = DetailFactory(artwork=kept, caption="a green dragon")
    text_index.rebuild_and_save()
    Artwork.objects.filter(pk=gone.pk).delete()
    Detail.objects.filter(pk=region.pk).update(review_state="hidden")
    assert (kept.pk, None) in words("dragon"), "the artwork's own title still matches, the region is hidden"
    # The leg answers from memory; the pipeline checks the fused candidates once, for every leg.
    query = SearchQuery(text="dragon", rerank=False)
    stage = first_stage(query, text="dragon", exclude=(), vector=None, model_key="")
    assert [(c.artwork_id, c.detail_id) for c in stage.candidates] == [(kept.pk, None)]


def test_sync_reindexes_changed_artworks_and_the_command_saves_a_loadable_index(capsys) -> None:
    first = ArtworkFactory(title="A unicorn")
    call_command("search_index", "rebuild", "--only", "words")
    assert "1 artworks" in capsys.readouterr().out
    text_index.reset()
    index = text_index.current_index()
    assert index is not None and index.size() == (1, 0)

    later = ArtworkFactory(title="Another unicorn")
    DetailFactory(artwork=first, caption="a griffin beside it")
    Artwork.objects.filter(pk=first.pk).update(title="A horse")  # .update(): updated_at is not touched...
    assert text_index.memory_lexical_leg(text="griffin", limit=10) == []
    assert index.sync() >= 2  # ...but the new detail is: the artwork is re-read whole
    assert words("unicorn") == [(later.pk, None)]
    assert words("griffin") == [(first.pk, Detail.objects.get(artwork=first).pk)]
    assert words("horse") == [(first.pk, None)]


def test_iconclass_leg_from_memory_ranks_as_postgresql_does() -> None:
    jerome = ArtworkFactory(title="Untitled", iconclass=["11H(JEROME)"])
    magdalene = ArtworkFactory(title="Untitled", iconclass=["11HH(MARY MAGDALENE)"])
    peter = DetailFactory(artwork=ArtworkFactory(title="Untitled"), iconclass=["11H(PETER)"], level="group")
    both = ArtworkFactory(title="Untitled", iconclass=["11H(PETER)", "11H(JEROME)"])
    filtered = ArtworkFactory(title="Untitled", iconclass=["11H(JEROME)"], date_begin=1900, date_end=1901)
    text_index.rebuild_and_save()
    weighted = [("11H(JEROME)", 1.0), ("11H(PETER)", 0.5), ("11HH(MARY MAGDALENE)", 0.2)]

    def legs(**kwargs):  # type: ignore[no-untyped-def]
        memory = [(h.artwork_id, h.detail_id, h.score) for h in iconclass_leg(notations=weighted, **kwargs)]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(text_index, "current_index", lambda: None)
            postgres = [
                (h.artwork_id, h.detail_id, h.score) for h in iconclass_leg(notations=weighted, **kwargs)
            ]
        assert memory == postgres
        return memory

    assert legs(limit=10) == [
        (jerome.pk, None, 1.0),
        (both.pk, None, 1.0),
        (filtered.pk, None, 1.0),
        (peter.artwork_id, peter.pk, 0.5),
        (magdalene.pk, None, 0.2),
    ]
    assert [a for a, _, _ in legs(limit=2)] == [jerome.pk, both.pk]
    assert filtered.pk not in [a for a, _, _ in legs(limit=10, filters=SearchFilters(year_to=1800))]
    assert legs(limit=10, level="group") == [(peter.artwork_id, peter.pk, 0.5)]
    assert legs(limit=10, level="scene") == []


def test_a_process_that_found_no_index_picks_up_one_saved_later(monkeypatch) -> None:
    ArtworkFactory(title="A unicorn")
    monkeypatch.setattr(text_index, "_upkeep", lambda index: None)  # no sync thread in a test
    assert text_index.current_index() is None
    assert text_index.WordIndex.saved_at() is None
    built = text_index.WordIndex.rebuild()
    built.save()  # as `search_index rebuild` in another process would
    assert text_index.WordIndex.saved_at() == pytest.approx(built.built_at)
    assert text_index.current_index() is None, "not before the next look"
    monkeypatch.setattr(text_index, "SYNC_EVERY_S", 0.0)
    index = text_index.current_index()
    assert index is not None and index.size() == (1, 0)


def test_an_empty_catalogue_builds_an_index_that_finds_nothing() -> None:
    index = text_index.rebuild_and_save()
    assert index.size() == (0, 0)
    assert words("anything at all") == []
    assert iconclass_leg(notations=[("11H(JEROME)", 1.0)], limit=10) == []


def test_upkeep_reads_nothing_while_no_watched_table_is_written(monkeypatch) -> None:
    ArtworkFactory(title="A unicorn")
    index = text_index.rebuild_and_save()
    assert index.vocabulary is None
    text_index.upkeep_once(index)  # records the tables' write counters
    assert index.vocabulary is not None, "the misspelling table is built here, not in a visitor's query"
    assert index.vocabulary.closest("unicorm") == "unicorn"
    syncs = []
    monkeypatch.setattr(text_index.WordIndex, "sync", lambda self: syncs.append(1) or 0)
    text_index.upkeep_once(index)
    assert syncs == [], "nothing was written: nothing is read"
    ArtworkFactory(title="A griffin")
    text_index.upkeep_once(index)
    assert syncs == [1], "a write moves the counters: the changed artworks are read"


@pytest.mark.parametrize(
    "values", ["distinct", "ties", "few_positive", "negated", "clustered", "fewer_than_k"]
)
def test_top_positions_over_many_scores_equals_a_full_sort(values: str) -> None:
    rng = np.random.default_rng(3)
    n, k = 300_000, 512  # enough positive scores for the sampled bound
    if values == "distinct":
        scores = rng.random(n).astype(np.float32)
    elif values == "ties":
        scores = rng.integers(1, 4, n).astype(np.float32)  # three values: the bound keeps every tie
    elif values == "few_positive":
        scores = np.where(rng.random(n) < 0.05, rng.random(n), 0.0).astype(np.float32)
    elif values == "negated":  # a negated word's documents are -inf
        scores = np.where(rng.random(n) < 0.3, -np.inf, rng.random(n)).astype(np.float32)
    elif values == "clustered":  # every positive score where a strided sample barely looks
        scores = np.zeros(n, dtype=np.float32)
        scores[-k * 2 :] = rng.random(k * 2)
    else:  # fewer positive scores than asked
        scores = np.zeros(n, dtype=np.float32)
        scores[rng.choice(n, k // 2, replace=False)] = rng.random(k // 2)
    positive = np.flatnonzero(scores > 0)
    expected = positive[np.lexsort((positive, -scores[positive]))][:k]
    assert top_positions(scores, k).tolist() == expected.tolist()
