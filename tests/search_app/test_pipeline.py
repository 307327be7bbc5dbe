"""The whole pipeline: encode, legs, fusion, exclusions, levels, rerank on a real worker, degraded mode."""

from __future__ import annotations

import numpy as np
import pytest

from search_app import request_control
from search_app.iconclass_expansion import forget_catalogue_notations
from search_app.pipeline import search_sync
from search_app.query_encoding import remember_text_vector
from search_app.query_parsing import QueryError
from search_app.types import SearchQuery
from tests.factories import ArtworkFactory, DetailFactory
from tests.search_app.conftest import MODEL_KEY, embed_artwork, embed_detail, unit

ANGEL = unit([1, 0, 0, 0, 0, 0, 0, 0])


def _axis(i: int, mix: float = 0.0) -> np.ndarray:
    v = np.zeros(8, dtype=np.float32)
    v[i] = 1.0
    v[0] += mix
    return unit(v)


@pytest.fixture
def catalogue(fake_models, clean_cache):  # type: ignore[no-untyped-def]
    """Six artworks. The angel one has an angel region far from its whole-image vector; the others are
    less angelic, one of them in blue."""
    forget_catalogue_notations()
    fake_models.table = {"angel": ANGEL}
    angel = ArtworkFactory(title="Annunciation")
    embed_artwork(angel, _axis(2, 0.3))
    region = DetailFactory(
        artwork=angel, level="entity", label="angel", caption="an angel with wings", x=0.5, y=0.1
    )
    embed_detail(region, _axis(0, 0.0))
    wall = DetailFactory(artwork=angel, level="entity", label="wall", caption="a wall", x=0.0, y=0.5)
    embed_detail(wall, _axis(3))
    scene = DetailFactory(
        artwork=angel, level="scene", label="scene", caption="the annunciation", x=0, y=0, w=1, h=1
    )
    embed_detail(scene, _axis(0, 0.0) + _axis(2))
    blue = ArtworkFactory(title="Angel in a blue robe")
    embed_artwork(blue, _axis(0, 0.0) + 0.2 * _axis(4))
    red = ArtworkFactory(title="Angel in a red robe")
    embed_artwork(red, _axis(0, 0.0) + 0.25 * _axis(4))
    others = []
    for i in range(4):
        other = ArtworkFactory(title=f"Landscape {i}")
        embed_artwork(other, _axis(5 + i % 3, 0.1 * i))
        others.append(other)
    return {"angel": angel, "region": region, "scene": scene, "blue": blue, "red": red, "others": others}


@pytest.mark.django_db
def test_exclusions_push_matches_down(catalogue, settings) -> None:
    def order(text: str) -> list[int]:
        return [h.artwork_id for h in search_sync(SearchQuery(text=text, rerank=False), in_process=True).hits]

    blue, red = catalogue["blue"].pk, catalogue["red"].pk
    plain = order("angel")
    assert plain.index(blue) < plain.index(red)  # blue is a little closer to the query, and older

    excluded = order("angel -blue")
    assert excluded.index(red) < excluded.index(blue)
    assert order("angel but no blue") == excluded
    response = search_sync(SearchQuery(text="angel -blue", rerank=False), in_process=True)
    flags = {h.artwork_id: h.legs.get("excluded") for h in response.hits}
    assert flags[blue] == 1.0 and flags[red] is None


@pytest.mark.django_db
def test_detail_levels_answer_with_regions_of_that_level(catalogue) -> None:
    entities = search_sync(SearchQuery(text="angel", level="entity", rerank=False), in_process=True)
    assert entities.hits and all(h.detail is not None and h.detail.level == "entity" for h in entities.hits)
    assert entities.hits[0].detail.id == catalogue["region"].pk  # type: ignore[union-attr]

    scenes = search_sync(SearchQuery(text="angel", level="scene", rerank=False), in_process=True)
    assert [h.detail.id for h in scenes.hits] == [catalogue["scene"].pk]  # type: ignore[union-attr]


@pytest.mark.django_db
def test_pages_do_not_overlap_and_say_when_there_is_more(catalogue) -> None:
    first = search_sync(SearchQuery(text="angel", limit=2, rerank=False), in_process=True)
    second = search_sync(SearchQuery(text="angel", limit=2, offset=2, rerank=False), in_process=True)
    assert first.has_more
    assert len(first.hits) == 2 and second.hits
    assert not {h.artwork_id for h in first.hits} & {h.artwork_id for h in second.hits}


def test_a_remembered_ranking_comes_back_as_it_was_and_apart_from_the_original() -> None:
    from search_app.fusion import Candidate
    from search_app.pipeline import FirstStage, _stage_from_cache, _stage_to_cache

    stage = FirstStage(
        candidates=[
            Candidate(artwork_id=7, fused=0.5, detail_id=70, best_detail_rank=2, legs={"vector": 0.4}),
            Candidate(artwork_id=8, fused=0.3, legs={"lexical": 2.5}, excluded=True),
        ]
    )
    raw = _stage_to_cache(stage, {"scores": {"7": 0.9}})
    stage.candidates[0].legs["lexical"] = 1.0  # the search goes on with its own candidates
    back, rerank = _stage_from_cache(raw)
    assert back.candidates == [
        Candidate(artwork_id=7, fused=0.5, detail_id=70, best_detail_rank=2, legs={"vector": 0.4}),
        Candidate(artwork_id=8, fused=0.3, legs={"lexical": 2.5}, excluded=True),
    ]
    assert rerank == {"scores": {"7": 0.9}}


@pytest.mark.django_db
def test_threshold_cuts_weak_hits(catalogue) -> None:
    everything = search_sync(SearchQuery(text="angel", rerank=False, threshold=0.0), in_process=True)
    strict = search_sync(SearchQuery(text="angel", rerank=False, threshold=0.9), in_process=True)
    assert len(strict.hits) < len(everything.hits)
    assert all(h.score >= 0.9 for h in strict.hits)


def test_bad_queries_get_clear_errors() -> None:
    with pytest.raises(QueryError, match="level"):
        search_sync(SearchQuery(text="angel", level="galaxy"), in_process=True)
    with pytest.raises(QueryError, match="nothing to search"):
        search_sync(SearchQuery(text="  "), in_process=True)


@pytest.mark.django_db
def test_degraded_to_first_stage_when_no_worker_consumes_the_rerank_queue(
    catalogue, clean_cache, settings
) -> None:
    settings.SEARCH = {**settings.SEARCH, "rerank_timeout_s": 0.5}
    remember_text_vector("angel", ANGEL, model_key=MODEL_KEY)  # encoded earlier: only the rerank is missing

    response = search_sync(SearchQuery(text="angel"))  # through the async pipeline, as the web runs it

    assert not response.reranked
    assert "rerank unavailable" in response.degraded
    assert response.hits and all(h.rerank_score is None for h in response.hits)
    # Nobody will read the late answer: the queued task is told to stop, so a worker that comes back skips it.
    flags = list(clean_cache.scan_iter(match="semart:search:*:stop"))
    assert len(flags) == 1


@pytest.mark.django_db(transaction=True)
def test_rerank_runs_on_a_real_worker_and_sets_the_final_scores(catalogue, celery_worker, settings) -> None:
    settings.SEARCH = {**settings.SEARCH, "rerank_timeout_s": 20, "alpha": 0.5, "threshold": 0.0}
    # No cached vector: the worker encodes the query too.
    response = search_sync(SearchQuery(text="angel"))

    assert response.degraded == ""
    assert response.reranked
    assert all(h.rerank_score is not None for h in response.hits)
    for hit in response.hits:
        assert hit.score == pytest.approx(0.5 * hit.rerank_score + 0.5 * hit.vector_score, abs=1e-5)  # type: ignore[operator]
    top = response.hits[0]
    assert top.artwork_id == catalogue["angel"].pk  # its angel region and caption outweigh a title
    assert top.detail is not None and top.detail.id == catalogue["region"].pk
    assert "encode" in response.timings_ms and "rerank" in response.timings_ms
    assert not request_control.stop_requested("no-such-search")


def fake_slow_word_leg(**_: object) -> list:  # type: ignore[type-arg]
    """A test double for the full-text leg: a query that takes 0.5 s in PostgreSQL, whatever the words."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0.5)")
    return []


@pytest.mark.django_db
def test_a_word_leg_over_its_budget_is_skipped_and_said(catalogue, settings, monkeypatch) -> None:
    from django.db import connection

    settings.SEARCH = {**settings.SEARCH, "text_leg_budget_ms": 100}
    monkeypatch.setattr("search_app.pipeline.lexical_leg", fake_slow_word_leg)

    response = search_sync(SearchQuery(text="angel", rerank=False), in_process=True)

    assert "word matches skipped (over 100 ms)" in response.degraded
    # The vector legs still answer.
    assert response.hits[0].artwork_id in {catalogue["angel"].pk, catalogue["blue"].pk}
    with connection.cursor() as cursor:  # the budget ended with its leg: a slower statement still runs
        cursor.execute("SELECT pg_sleep(0.2), current_setting('statement_timeout')")
        assert cursor.fetchone()[1] == "0"

    settings.SEARCH = {**settings.SEARCH, "text_leg_budget_ms": 2000}
    assert "skipped" not in search_sync(SearchQuery(text="angel", rerank=False), in_process=True).degraded


@pytest.mark.django_db
def test_without_the_rerank_a_named_label_still_picks_the_region(fake_models, clean_cache) -> None:
    forget_catalogue_notations()
    fake_models.table = {"a golden halo": ANGEL}
    icon = ArtworkFactory(title="Untitled")
    embed_artwork(icon, _axis(2))
    loose = DetailFactory(artwork=icon, level="entity", label="halo", confidence=0.4, w=0.5, h=0.5)
    tight = DetailFactory(artwork=icon, level="entity", label="halo", confidence=0.9, w=0.1, h=0.1)
    embed_detail(loose, _axis(0))  # the closest vector...
    embed_detail(tight, _axis(1))  # ...but the detector was surer of this one
    for rerank in (False, True):
        hits = search_sync(SearchQuery(text="a golden halo", rerank=rerank), in_process=True).hits
        assert hits[0].artwork_id == icon.pk
        assert hits[0].detail is not None and hits[0].detail.id == tight.pk, f"rerank={rerank}"


@pytest.mark.django_db
def test_an_artworks_search_shows_where_the_named_thing_is_placed(fake_models, clean_cache) -> None:
    from collections_app.models import Placement

    forget_catalogue_notations()
    fake_models.table = {"a golden halo": ANGEL, "an angel": ANGEL}
    icon = ArtworkFactory(title="Untitled")
    embed_artwork(icon, _axis(2))
    detail = DetailFactory(artwork=icon, level="entity", label="halo", confidence=0.9, w=0.1, h=0.1)
    embed_detail(detail, _axis(0))
    Placement.objects.create(artwork=icon, label="halo", x=0.4, y=0.05, w=0.2, h=0.2, confidence=0.7)
    Placement.objects.create(artwork=icon, label="crown", x=0.1, y=0.1, w=0.3, h=0.3, confidence=0.6)
    for rerank in (False, True):
        hit = search_sync(SearchQuery(text="a golden halo", rerank=rerank), in_process=True).hits[0]
        assert hit.artwork_id == icon.pk
        assert hit.detail is not None, f"rerank={rerank}"
        assert (hit.detail.id, hit.detail.level, hit.detail.label) == (None, "placement", "halo")
        assert hit.detail.box == pytest.approx((0.4, 0.05, 0.2, 0.2))
    # A query naming no placed label keeps the detail; so does a search for details.
    unnamed = search_sync(SearchQuery(text="an angel", rerank=False), in_process=True).hits[0]
    assert unnamed.detail is not None and unnamed.detail.id == detail.pk
    at_details = search_sync(SearchQuery(text="a golden halo", level="entity"), in_process=True).hits[0]
    assert at_details.detail is not None and at_details.detail.id == detail.pk


@pytest.mark.django_db(transaction=True)  # committed rows: the legs' threads read on their own connections
def test_legs_on_threads_answer_as_in_sequence(catalogue, settings, monkeypatch) -> None:
    import threading

    from search_app import pipeline

    def ranking() -> list[tuple[int, float]]:
        hits = search_sync(SearchQuery(text="angel", rerank=False), in_process=True).hits
        return [(h.artwork_id, h.score) for h in hits]

    settings.SEARCH = {**settings.SEARCH, "parallel_legs": False}
    in_sequence = ranking()
    threads: list[str] = []
    original = pipeline.lexical_leg

    def watched(**kwargs):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread().name)
        return original(**kwargs)

    monkeypatch.setattr(pipeline, "lexical_leg", watched)
    settings.SEARCH = {**settings.SEARCH, "parallel_legs": True}
    assert ranking() == in_sequence
    assert threads and threads[0].startswith("search-leg"), threads
