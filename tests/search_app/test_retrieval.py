"""The first-stage legs against real PostgreSQL + pgvector."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection, transaction

from collections_app.vector_indexes import ensure_hnsw_index, index_name
from search_app.fusion import reciprocal_rank_fusion
from search_app.iconclass_expansion import expand_query, forget_catalogue_notations
from search_app.query_parsing import parse_query_text
from search_app.retrieval import iconclass_leg, lexical_leg, set_hnsw_scan, vector_leg, vector_leg_sql
from search_app.types import SearchFilters
from tests.factories import ArtistFactory, ArtworkFactory, DetailFactory
from tests.search_app.conftest import MODEL_KEY, embed_artwork, embed_detail, unit

pytestmark = pytest.mark.django_db

DIM = 16


def _clustered(rng: np.random.Generator, n: int, centres: np.ndarray) -> np.ndarray:
    """Clustered vectors: uniformly random ones defeat every ANN index (FINDINGS.md)."""
    picks = rng.integers(0, len(centres), size=n)
    return centres[picks] + 0.15 * rng.standard_normal((n, centres.shape[1]))


@pytest.fixture
def many_artworks(settings):  # type: ignore[no-untyped-def]
    """400 artworks with clustered vectors; one in ten is an icon, the rest paintings."""
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((12, DIM))
    vectors = _clustered(rng, 400, centres)
    # Index first: inside the test's transaction, CREATE INDEX after the inserts meets pending FK triggers.
    ensure_hnsw_index(target="artwork", model_key=MODEL_KEY, kind="image", dim=DIM)
    artworks = []
    for i, v in enumerate(vectors):
        artwork = ArtworkFactory(classification="Icon" if i % 10 == 0 else "Painting")
        embed_artwork(artwork, v)
        artworks.append(artwork)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE collections_app_artworkembedding")
    return artworks, vectors, centres


def test_hnsw_leg_with_a_minority_filter_still_fills_the_page(settings, many_artworks) -> None:
    settings.SEARCH = {**settings.SEARCH, "exact_scan_below": 0, "hnsw_ef_search": 24}
    artworks, _, centres = many_artworks
    query = unit(centres[0])
    icons = SearchFilters(classification="Icon")

    hits = vector_leg(
        vector=query, model_key=MODEL_KEY, target="artwork", kind="image", filters=icons, limit=24
    )

    by_id = {a.pk: a for a in artworks}
    assert len(hits) == 24, "40 icons exist: a filtered search must still return a full page"
    assert {by_id[h.artwork_id].classification for h in hits} == {"Icon"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    # The same SQL with the HNSW plan pinned (on 400 rows the planner may rightly prefer to filter first):
    # the partial index is used, the iterative scan fills the page, and without it the page comes back
    # short, which is the failure the settings above exist to prevent.
    built = vector_leg_sql(
        vector=query,
        model_key=MODEL_KEY,
        target="artwork",
        kind="image",
        filters=icons,
        limit=24,
        exact=False,
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_sort = off")
        set_hnsw_scan(cursor, limit=24)
        cursor.execute("EXPLAIN " + built.sql, built.params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute(built.sql, built.params)
        iterative = cursor.fetchall()
        cursor.execute("SET LOCAL hnsw.iterative_scan = off")
        cursor.execute(built.sql, built.params)
        without_iterative = cursor.fetchall()
    assert index_name("artwork", MODEL_KEY, "image", DIM) in plan, plan
    assert len(iterative) == 24
    assert {by_id[row[0]].classification for row in iterative} == {"Icon"}
    assert len(without_iterative) < 24


def test_exact_leg_matches_brute_force(settings, many_artworks) -> None:
    settings.SEARCH = {**settings.SEARCH, "exact_scan_below": 100_000}
    artworks, vectors, centres = many_artworks
    query = unit(centres[3] + 0.05)
    paintings = SearchFilters(classification="Painting")

    hits = vector_leg(
        vector=query, model_key=MODEL_KEY, target="artwork", kind="image", filters=paintings, limit=10
    )

    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = normed @ query
    allowed = [i for i, a in enumerate(artworks) if a.classification == "Painting"]
    expected = [artworks[i].pk for i in sorted(allowed, key=lambda i: -sims[i])[:10]]
    assert [h.artwork_id for h in hits] == expected  # halfvec rounding does not reorder these clusters


def test_detail_leg_filters_levels_and_keeps_the_best_region_per_artwork(settings) -> None:
    settings.SEARCH = {**settings.SEARCH, "exact_scan_below": 100_000}
    target = unit([1, 0, 0, 0, 0, 0, 0, 0])
    artwork = ArtworkFactory()
    near = DetailFactory(artwork=artwork, level="entity", label="lily")
    far = DetailFactory(artwork=artwork, level="entity", label="wall")
    scene = DetailFactory(artwork=artwork, level="scene", label="annunciation", x=0.0, y=0.0, w=1.0, h=1.0)
    embed_detail(near, [0.9, 0.1, 0, 0, 0, 0, 0, 0])
    embed_detail(far, [0.1, 0.9, 0, 0, 0, 0, 0, 0])
    embed_detail(scene, [1, 0, 0, 0, 0, 0, 0, 0])
    other = DetailFactory(level="entity")
    embed_detail(other, [0.6, 0.4, 0, 0, 0, 0, 0, 0])

    entity_hits = vector_leg(
        vector=target, model_key=MODEL_KEY, target="detail", kind="image", levels=("entity",), limit=10
    )
    assert [h.detail_id for h in entity_hits] == [near.pk, other.pk, far.pk]  # the scene is not an entity
    fused = reciprocal_rank_fusion({"vector_details": entity_hits})
    assert [(c.artwork_id, c.detail_id) for c in fused] == [
        (artwork.pk, near.pk),
        (other.artwork_id, other.pk),
    ]

    scene_hits = vector_leg(
        vector=target, model_key=MODEL_KEY, target="detail", kind="image", levels=("scene",), limit=10
    )
    assert [h.detail_id for h in scene_hits] == [scene.pk]


def test_lexical_leg_finds_titles_descriptions_artists_and_labels() -> None:
    forget_catalogue_notations()
    jerome = ArtworkFactory(title="Saint Jerome in his study", description="A lion sleeps by the desk.")
    painter = ArtworkFactory(title="Portrait of a merchant")
    painter.artists.add(ArtistFactory(name="Hans Holbein"))
    wings = ArtworkFactory(title="Untitled icon")
    wing = DetailFactory(artwork=wings, label="angel_wings", caption="golden wings of an angel")
    ArtworkFactory(title="Still life with fruit")

    assert [h.artwork_id for h in lexical_leg(text="lion", limit=10)] == [jerome.pk]
    assert [h.artwork_id for h in lexical_leg(text="Holbein", limit=10)] == [painter.pk]
    wing_hits = lexical_leg(text="angel wings", limit=10)
    assert [(h.artwork_id, h.detail_id) for h in wing_hits] == [(wings.pk, wing.pk)]
    # At a detail level only regions answer: Jerome's title is not a region.
    assert lexical_leg(text="Jerome", level="entity", limit=10) == []
    # A misspelt name finds nothing as words and falls back to trigrams.
    assert [h.artwork_id for h in lexical_leg(text="Jerom studdy", limit=10)] == [jerome.pk]


def test_a_pasted_title_with_a_lone_dash_finds_its_own_artwork() -> None:
    """PostgreSQL's websearch syntax reads " - Art" as "not art": the parsed text has no lone dash."""
    lady = ArtworkFactory(title="A Lady Reading - Art Institute of Chicago")
    ArtworkFactory(title="A Lady Reading, Institute of Chicago")  # every word but "art"
    text, exclude = parse_query_text("A Lady Reading - Art Institute of Chicago")
    assert exclude == ()
    assert [h.artwork_id for h in lexical_leg(text=text, limit=10)] == [lady.pk]


def test_lexical_leg_reads_iconclass_texts_of_the_artworks_notations() -> None:
    forget_catalogue_notations()
    jerome = ArtworkFactory(title="Untitled", iconclass=["11H(JEROME)"])
    ArtworkFactory(title="Untitled", iconclass=["11HH(MARY MAGDALENE)"])
    assert [h.artwork_id for h in lexical_leg(text="hermit", limit=10)] == [jerome.pk]


def test_iconclass_leg_expands_attributes_to_subjects() -> None:
    forget_catalogue_notations()
    jerome = ArtworkFactory(title="Untitled", iconclass=["11H(JEROME)"])
    magdalene = ArtworkFactory(title="Untitled", iconclass=["11HH(MARY MAGDALENE)"])
    peter_detail = DetailFactory(
        artwork=ArtworkFactory(title="Untitled"), iconclass=["11H(PETER)"], level="group"
    )

    notations = expand_query("a saint with a lion and a skull")
    assert notations and notations[0][0] == "11H(JEROME)"
    assert [h.artwork_id for h in iconclass_leg(notations=notations, limit=10)] == [jerome.pk]

    jar = expand_query("jar of ointment")
    assert [h.artwork_id for h in iconclass_leg(notations=jar, limit=10)] == [magdalene.pk]

    keys = expand_query("keys of heaven")
    hits = iconclass_leg(notations=keys, level="group", limit=10)
    assert [(h.artwork_id, h.detail_id) for h in hits] == [(peter_detail.artwork_id, peter_detail.pk)]
    assert iconclass_leg(notations=keys, level="scene", limit=10) == []


def test_filters_apply_inside_the_lexical_leg() -> None:
    forget_catalogue_notations()
    old = ArtworkFactory(title="A lion", date_begin=1400, date_end=1410)
    new = ArtworkFactory(title="A lion", date_begin=1800, date_end=1805)
    hits = lexical_leg(text="lion", filters=SearchFilters(year_from=1700), limit=10)
    assert [h.artwork_id for h in hits] == [new.pk]
    assert old.pk not in [h.artwork_id for h in hits]
