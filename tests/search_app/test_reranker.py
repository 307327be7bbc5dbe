"""OfflineReranker, the offline second stage, and the rerank step that feeds it from the catalogue."""

from __future__ import annotations

import numpy as np
import pytest

from search_app.reranking import rerank_run, route_label
from tests.factories import ArtworkFactory, DetailFactory
from tests.search_app.conftest import MODEL_KEY, embed_artwork, embed_detail, unit
from workers.inference.base import RerankCandidate, StopRequested
from workers.inference.offline.reranker import OfflineReranker
from workers.inference.registry import backend_class

QUERY = unit([1, 0, 0, 0])


def test_it_is_the_registered_offline_reranker() -> None:
    assert backend_class("reranker", "offline-details") is OfflineReranker


def test_a_matching_region_and_its_words_outrank_a_near_whole_image() -> None:
    region_match = RerankCandidate(
        id="1",
        text="Untitled",
        region_vectors=np.stack([unit([0, 1, 0, 0]), unit([0.95, 0.05, 0, 0])]),
        region_texts=["wall", "halo around the saint's head"],
    )
    whole_image = RerankCandidate(
        id="2", text="Portrait", region_vectors=np.stack([unit([0.5, 0.5, 0.5, 0])])
    )
    nothing = RerankCandidate(id="3", text="Still life")
    scores = OfflineReranker().score(
        "a golden halo", [region_match, whole_image, nothing], query_vector=QUERY
    )
    assert scores[0] > scores[1] > scores[2]
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_lexical_and_iconclass_evidence_raise_the_score() -> None:
    plain = RerankCandidate(id="1", text="Untitled")
    tagged = RerankCandidate(id="2", text="Untitled", evidence={"iconclass": 1.0, "lexical": 0.2})
    low, high = OfflineReranker().score("Saint Jerome", [plain, tagged], query_vector=QUERY)
    assert high > low


def test_it_stops_between_batches() -> None:
    reranker = OfflineReranker()
    candidates = [RerankCandidate(id=str(i), text="x") for i in range(3 * reranker.batch_size)]
    checks = []

    def should_stop() -> bool:
        checks.append(1)
        return len(checks) > 1  # the request goes away after the first batch

    batches: list[int] = []
    with pytest.raises(StopRequested):
        reranker.score("x", candidates, query_vector=QUERY, should_stop=should_stop, on_batch=batches.append)
    assert batches == [0]


@pytest.mark.django_db
def test_rerank_run_reads_every_region_and_returns_the_best_one() -> None:
    artwork = ArtworkFactory(title="Untitled")
    embed_artwork(artwork, [0, 0, 1, 0])
    wall = DetailFactory(artwork=artwork, label="wall")
    halo = DetailFactory(artwork=artwork, label="halo", x=0.5, y=0.0, w=0.2, h=0.2)
    hidden = DetailFactory(artwork=artwork, label="halo", review_state="hidden")
    embed_detail(wall, [0, 1, 0, 0])
    embed_detail(halo, [0.9, 0.1, 0, 0])
    embed_detail(hidden, [1, 0, 0, 0])
    other = ArtworkFactory(title="Untitled")
    embed_artwork(other, [0.2, 0, 1, 0])

    result = rerank_run(
        text="halo",
        query_vector=QUERY,
        model_key=MODEL_KEY,
        level="artworks",
        candidates=[
            {"artwork_id": other.pk, "first_stage": 1.0},
            {"artwork_id": artwork.pk, "first_stage": 0.5},
        ],
        reranker=OfflineReranker(),
    )
    assert result["scores"][str(artwork.pk)] > result["scores"][str(other.pk)]
    assert result["regions"] == {str(artwork.pk): halo.pk}  # the hidden detail is never shown


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("a golden halo around a saint's head", "halo"),  # the first thing named, not the saint
        ("angel wings", "wings"),  # a compound names its last word
        ("clouds in the sky", "cloud"),  # plurals
        ("the infant Christ Child", "the Christ Child"),  # articles, and "child" inside it
        ("a lonely boat in stormy seas", None),  # no label named: the vectors decide
        ("a sceptre", "scepter"),  # British and American spellings
        ("Christ's hand raised in blessing", "blessing hand of Christ"),  # its words, in another order
        ("a person holding a book", "person holding book"),  # more of the query than "person" or "book"
        ("Christ blessing", "Christ"),  # not every word of the hand's label: the phrase named
    ],
)
def test_route_label_finds_the_thing_a_query_asks_for(query: str, expected: str | None) -> None:
    labels = ["halo", "saint", "angel", "wings", "cloud", "the Christ Child", "child", "person", "scepter",
              "Christ", "blessing hand of Christ", "book", "person holding book"]  # fmt: skip
    assert route_label(query, labels) == expected


@pytest.mark.django_db
def test_a_named_label_picks_the_most_confident_detail_with_it() -> None:
    artwork = ArtworkFactory(title="Untitled")
    embed_artwork(artwork, [0, 0, 1, 0])
    loose = DetailFactory(artwork=artwork, label="halo", confidence=0.55)
    tight = DetailFactory(artwork=artwork, label="halo", confidence=0.9)
    saint = DetailFactory(artwork=artwork, label="saint", confidence=0.99)
    for detail, vector in ((loose, [1, 0, 0, 0]), (tight, [0, 1, 0, 0]), (saint, [0.9, 0.1, 0, 0])):
        embed_detail(detail, vector)
    run = {
        "query_vector": QUERY,
        "model_key": MODEL_KEY,
        "level": "artworks",
        "candidates": [{"artwork_id": artwork.pk, "first_stage": 1.0}],
        "reranker": OfflineReranker(),
    }
    named = rerank_run(text="a golden halo around a saint's head", **run)
    assert named["regions"] == {str(artwork.pk): tight.pk}, "the halo the detector was surest of"
    unnamed = rerank_run(text="something golden", **run)
    assert unnamed["regions"] == {str(artwork.pk): loose.pk}, "no label named: the closest vector"
