"""FAISS as the vector index: same answers as pgvector's exact scan, filters inside, kept in step."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from django.core.management import call_command

from search_app import faiss_index
from search_app.retrieval import vector_leg
from search_app.types import SearchFilters
from tests.factories import ArtworkFactory, DetailFactory
from tests.search_app.conftest import MODEL_KEY, embed_artwork, embed_detail, unit

pytestmark = pytest.mark.django_db
DIM = 16


@pytest.fixture(autouse=True)
def fresh_indexes(settings, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    settings.SEMART_DATA_DIR = tmp_path
    settings.SEARCH = {**settings.SEARCH, "exact_scan_below": 1_000_000}
    monkeypatch.setattr(faiss_index, "_indexes", {})
    monkeypatch.setattr(faiss_index, "SYNC_EVERY_S", 0.0)
    monkeypatch.setattr(faiss_index, "SYNC_IN_BACKGROUND", False)


def leg_args(vector: np.ndarray, *, target: str = "artwork", limit: int, **more: Any) -> dict[str, Any]:
    """The arguments of a FAISS leg (and of the pgvector leg it is compared with) over image vectors."""
    fixed = {"model_key": MODEL_KEY, "kind": "image"}
    return {"vector": vector, "target": target, "limit": limit, **fixed, **more}


@pytest.fixture
def artworks():  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(11)
    centres = rng.standard_normal((8, DIM))
    out = []
    for i in range(200):
        artwork = ArtworkFactory(classification="Icon" if i % 8 == 0 else "Painting")
        embed_artwork(artwork, centres[i % 8] + 0.2 * rng.standard_normal(DIM))
        out.append(artwork)
    return out, centres


def test_faiss_matches_the_exact_scan_with_a_minority_filter(artworks) -> None:
    _, centres = artworks
    query = unit(centres[1])
    icons = SearchFilters(classification="Icon")
    args = leg_args(query, limit=20, filters=icons)

    from_faiss = faiss_index.faiss_leg(**args)
    from_pg = vector_leg(**args)

    assert len(from_faiss) == 20  # 25 icons exist: the filter is inside the search
    assert [h.artwork_id for h in from_faiss] == [h.artwork_id for h in from_pg]
    assert [h.score for h in from_faiss] == pytest.approx(
        [h.score for h in from_pg], abs=2e-3
    )  # halfvec rounding


def test_faiss_index_follows_inserts_and_deletes(artworks) -> None:
    query = unit(np.eye(DIM)[0])
    args = leg_args(query, limit=5)
    before = faiss_index.faiss_leg(**args)

    newcomer = ArtworkFactory()
    embed_artwork(newcomer, np.eye(DIM)[0])
    assert faiss_index.faiss_leg(**args)[0].artwork_id == newcomer.pk

    newcomer.delete()
    assert [h.artwork_id for h in faiss_index.faiss_leg(**args)] == [h.artwork_id for h in before]


def test_sync_reads_only_new_ids_unless_the_count_disagrees(artworks) -> None:
    vi = faiss_index.get_index(target="artwork", model_key=MODEL_KEY, kind="image", dim=DIM)
    assert vi.sync() == (0, 0)
    first = ArtworkFactory()
    embed_artwork(first, np.eye(DIM)[1])
    assert vi.sync() == (1, 0), "a row above the highest id"
    second = ArtworkFactory()
    embed_artwork(second, np.eye(DIM)[2])
    artworks[0][0].delete()
    assert vi.sync() == (1, 1), "a deletion: the count disagrees, every id is compared"
    assert vi.index.ntotal == 201


def test_detail_levels_and_hidden_details(settings) -> None:
    artwork = ArtworkFactory()
    entity = DetailFactory(artwork=artwork, level="entity")
    scene = DetailFactory(artwork=artwork, level="scene", x=0, y=0, w=1, h=1)
    hidden = DetailFactory(artwork=artwork, level="entity", review_state="hidden")
    for d in (entity, scene, hidden):
        embed_detail(d, np.eye(DIM)[0])
    args = leg_args(unit(np.eye(DIM)[0]), target="detail", limit=5)
    assert {h.detail_id for h in faiss_index.faiss_leg(**args)} == {entity.pk, scene.pk}
    assert [h.detail_id for h in faiss_index.faiss_leg(levels=("scene",), **args)] == [scene.pk]


def test_rebuild_command_writes_the_index_files(artworks, settings, capsys) -> None:
    call_command("search_index", "rebuild")
    assert "200 vectors" in capsys.readouterr().out
    assert list((settings.SEMART_DATA_DIR / "indexes" / "faiss").glob("artwork-*.faiss"))
    # A fresh process loads the file and answers the same.
    faiss_index._indexes.clear()
    call_command("search_index", "status")
    assert "200 vectors" in capsys.readouterr().out


def test_a_saved_ivf_index_loads_with_its_owners(artworks, settings, monkeypatch) -> None:
    monkeypatch.setattr(faiss_index, "IVF_FROM", 100)
    # every list, float32: exact, to compare
    settings.SEARCH = {**settings.SEARCH, "faiss_nprobe": 64, "faiss_codec": "flat"}
    call_command("search_index", "rebuild", "--only", "faiss")
    faiss_index._indexes.clear()

    def no_rebuild(self):  # type: ignore[no-untyped-def]
        raise AssertionError("a saved index must load from its files, not be built again")

    monkeypatch.setattr(faiss_index.VectorIndex, "rebuild", no_rebuild)
    vi = faiss_index.get_index(target="artwork", model_key=MODEL_KEY, kind="image", dim=DIM)
    assert "IVF" in type(vi.index).__name__ and len(vi.owners) == 200
    assert set(vi.owners.artworks.tolist()) == {a.pk for a in artworks[0]}
    query = unit(artworks[1][3])
    args = leg_args(query, limit=10)
    assert [h.artwork_id for h in faiss_index.faiss_leg(**args)] == [h.artwork_id for h in vector_leg(**args)]


def test_a_loaded_index_reads_every_id_only_when_its_count_says_rows_went(artworks, monkeypatch) -> None:
    """A web process that has just started must not stall its first searches comparing a million ids:
    its first sync reads the rows above the highest it holds, and all of them only when rows went."""
    call_command("search_index", "rebuild", "--only", "faiss")
    faiss_index._indexes.clear()
    reads: list[str] = []
    read = faiss_index._id_column
    monkeypatch.setattr(faiss_index, "_id_column", lambda sql, params: reads.append(sql) or read(sql, params))
    vi = faiss_index.get_index(target="artwork", model_key=MODEL_KEY, kind="image", dim=DIM)  # loads, syncs
    assert len(reads) == 1 and "id >" in reads[0], "only the rows written since the save"
    gone = artworks[0][5].pk
    artworks[0][5].delete()
    vi.sync()
    assert "id >" not in reads[-1], "a row went: every id is compared"
    assert gone not in vi.owners.artworks.tolist() and len(vi.owners) == 199


def test_sync_reads_nothing_when_the_table_saw_no_insert_or_delete(artworks, monkeypatch) -> None:
    vi = faiss_index.get_index(target="artwork", model_key=MODEL_KEY, kind="image", dim=DIM)
    vi.sync()  # records the table's counters

    def no_read(self):  # type: ignore[no-untyped-def]
        raise AssertionError("an unchanged table must not be read")

    with monkeypatch.context() as patched:
        patched.setattr(faiss_index.VectorIndex, "_ids_sql", no_read)
        assert vi.sync() == (0, 0)
    newcomer = ArtworkFactory()
    embed_artwork(newcomer, np.eye(DIM)[3])
    assert vi.sync() == (1, 0), "an insert moves the counters: the new row is read"


def test_hits_are_resolved_from_the_index_not_the_database(artworks, monkeypatch, django_assert_num_queries):
    query = unit(artworks[1][2])
    args = leg_args(query, limit=10)
    expected = [h.artwork_id for h in vector_leg(**args)]
    faiss_index.faiss_leg(**args)  # builds the index
    monkeypatch.setattr(faiss_index, "SYNC_EVERY_S", 1e9)
    with django_assert_num_queries(0):
        hits = faiss_index.faiss_leg(**args)
    assert [h.artwork_id for h in hits] == expected


def test_a_detail_hidden_after_the_build_stops_matching(settings) -> None:
    artwork = ArtworkFactory()
    shown = DetailFactory(artwork=artwork, level="entity")
    later_hidden = DetailFactory(artwork=artwork, level="entity")
    embed_detail(shown, np.eye(DIM)[1])
    embed_detail(later_hidden, np.eye(DIM)[0])
    args = leg_args(unit(np.eye(DIM)[0]), target="detail", limit=5)
    assert faiss_index.faiss_leg(**args)[0].detail_id == later_hidden.pk

    later_hidden.review_state = "hidden"
    later_hidden.save()
    assert [h.detail_id for h in faiss_index.faiss_leg(**args)] == [shown.pk]


def test_an_sq8_index_finds_what_the_exact_scan_finds(artworks, settings, monkeypatch) -> None:
    monkeypatch.setattr(faiss_index, "IVF_FROM", 100)
    settings.SEARCH = {**settings.SEARCH, "faiss_nprobe": 64, "faiss_codec": "sq8"}
    _, centres = artworks
    args = leg_args(unit(centres[5]), limit=20)
    from_faiss = faiss_index.faiss_leg(**args)
    vi = faiss_index.get_index(target="artwork", model_key=MODEL_KEY, kind="image", dim=DIM)
    assert "ScalarQuantizer" in type(vi.index).__name__
    exact = [h.artwork_id for h in vector_leg(**args)]
    # A byte a dimension moves scores by ~1e-3: near-ties may swap, the set stays.
    assert len({h.artwork_id for h in from_faiss} & set(exact)) >= 18
    assert [h.score for h in from_faiss][:5] == pytest.approx(
        [h.score for h in vector_leg(**args)][:5], abs=0.02
    )


def test_caption_vectors_are_probed_with_their_own_nprobe(settings, monkeypatch) -> None:
    """Captions reach the crops' recall with fewer lists (docs/benchmarks.md): two settings."""
    monkeypatch.setattr(faiss_index, "IVF_FROM", 100)
    settings.SEARCH = {**settings.SEARCH, "faiss_nprobe": 9, "faiss_nprobe_text": 5}
    rng = np.random.default_rng(3)
    for _ in range(120):
        detail = DetailFactory(level="entity")
        embed_detail(detail, rng.standard_normal(DIM), kind="image")
        embed_detail(detail, rng.standard_normal(DIM), kind="text")
    faiss = faiss_index._faiss()
    probed: list[tuple[str, int]] = []

    def spy(*, kind: str):  # type: ignore[no-untyped-def]
        def params(**kwargs):  # type: ignore[no-untyped-def]
            probed.append((kind, kwargs["nprobe"]))
            return real(**kwargs)

        return params

    real = faiss.SearchParametersIVF
    for kind in ("image", "text"):
        monkeypatch.setattr(faiss, "SearchParametersIVF", spy(kind=kind))
        hits = faiss_index.faiss_leg(
            **leg_args(unit(rng.standard_normal(DIM)), target="detail", limit=5, kind=kind)
        )
        assert len(hits) == 5
    assert probed == [("image", 9), ("text", 5)]


def test_a_saved_index_of_another_codec_is_built_again(artworks, settings, monkeypatch) -> None:
    monkeypatch.setattr(faiss_index, "IVF_FROM", 100)
    settings.SEARCH = {**settings.SEARCH, "faiss_codec": "flat"}
    call_command("search_index", "rebuild", "--only", "faiss")
    faiss_index._indexes.clear()
    settings.SEARCH = {**settings.SEARCH, "faiss_codec": "sq8"}
    vi = faiss_index.get_index(target="artwork", model_key=MODEL_KEY, kind="image", dim=DIM)
    assert "ScalarQuantizer" in type(vi.index).__name__ and len(vi.owners) == 200


def test_owners_find_rows_and_follow_changes() -> None:
    owners = faiss_index.Owners.of(np.array([30, 10, 20]), np.array([3, 1, 2]), np.array([300, 100, 200]))
    assert owners.ids.tolist() == [10, 20, 30] and owners.highest == 30
    pos, known = owners.find(np.array([20, 25, 99, 10]))
    assert known.tolist() == [True, False, False, True]
    assert owners.details[pos[known]].tolist() == [200, 100]
    changed = owners.changed(gone=np.array([20]), new=faiss_index.Owners.of(np.array([40]), np.array([4])))
    assert changed.ids.tolist() == [10, 30, 40] and changed.details.tolist() == [100, 300, -1]
