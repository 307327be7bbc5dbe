"""manage.py evaluate on a tiny hand-made dataset in the art-dev format."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from search_app.iconclass_expansion import forget_catalogue_notations
from tests.factories import ArtworkFactory, DetailFactory
from tests.search_app.conftest import embed_artwork, embed_detail, unit

pytestmark = pytest.mark.django_db


@pytest.fixture
def tiny_dataset(tmp_path, fake_models, clean_cache):  # type: ignore[no-untyped-def]
    forget_catalogue_notations()
    fake_models.table = {"a golden halo": unit([1, 0, 0, 0]), "a horse": unit([0, 1, 0, 0])}
    vectors = {"A1": [0.1, 0.1, 1, 0], "A2": [0.2, 0.9, 0, 0], "A3": [0, 0, 0, 1], "A4": [0, 0.1, 0.1, 1]}
    artworks = {sid: ArtworkFactory(source_id=sid, title="Untitled") for sid in vectors}
    for sid, v in vectors.items():
        embed_artwork(artworks[sid], v)
    halo = DetailFactory(artwork=artworks["A1"], label="halo", x=0.1, y=0.1, w=0.2, h=0.2)
    embed_detail(halo, [1, 0, 0, 0])
    # As after the vision pipeline, every picture has details (a leg with one artwork would rank it first).
    for sid in ("A2", "A3", "A4"):
        embed_detail(
            DetailFactory(artwork=artworks[sid], label="figure", x=0.0, y=0.0, w=0.9, h=0.9), vectors[sid]
        )
    (tmp_path / "queries.jsonl").write_text(
        json.dumps(
            {
                "qid": "det_halo",
                "type": "detail",
                "query": "a golden halo",
                "judged_pool": "box_annotated_images",
            }
        )
        + "\n"
        + json.dumps({"qid": "det_horse", "type": "detail", "query": "a horse", "judged_pool": "all_images"})
        + "\n"
    )
    (tmp_path / "qrels.tsv").write_text(
        "qid\timage_id\trelevance\ndet_halo\tA1\t1\ndet_horse\tA2\t1\ndet_horse\tA9\t1\n"
    )
    (tmp_path / "qrels_regions.jsonl").write_text(
        json.dumps({"qid": "det_halo", "image_id": "A1", "bbox_rel_xywh": [0.12, 0.1, 0.2, 0.2]}) + "\n"
    )
    (tmp_path / "metadata.csv").write_text("id,n_boxes\nA1,2\nA2,0\nA3,1\nA4,0\nA9,0\n")
    return tmp_path


def test_evaluate_writes_rankings_by_source_id_and_metrics(tiny_dataset, capsys) -> None:
    out = tiny_dataset / "out" / "eval.json"
    call_command(
        "evaluate",
        "--queries",
        str(tiny_dataset / "queries.jsonl"),
        "--qrels",
        str(tiny_dataset / "qrels.tsv"),
        "--regions",
        str(tiny_dataset / "qrels_regions.jsonl"),
        "--json",
        str(out),
    )
    result = json.loads(out.read_text())
    halo, horse = result["queries"]
    assert halo["ranking"][0] == "A1" and set(halo["ranking"]) == {"A1", "A2", "A3", "A4"}
    assert halo["regions"]["A1"] == pytest.approx([0.1, 0.1, 0.2, 0.2])
    # The halo query is judged only on box-annotated images (A1, A3): A1 first -> everything 1.0.
    assert halo["all"]["pool"] == 2
    assert halo["all"]["metrics"] == {"ndcg@10": 1.0, "ap": 1.0, "recall@24": 1.0, "mrr": 1.0}
    assert halo["all"]["region_hit@10"] == 1.0  # IoU 0.18/0.22 = 0.82 with the true box
    # A9 is judged relevant but is not in the catalogue, so it is outside the pool.
    assert horse["ranking"][0] == "A2" and horse["all"]["relevant"] == 1
    summary = result["metrics"]["all"]["detail"]
    assert summary["queries"] == 2 and summary["ndcg@10"]["mean"] == 1.0
    assert 0 < summary["ndcg@10"]["random"] < 1
    assert "HELD-OUT" in capsys.readouterr().out


def test_evaluate_rejects_malformed_files(tiny_dataset) -> None:
    (tiny_dataset / "bad.tsv").write_text("det_halo A1\n")
    with pytest.raises(CommandError, match="bad.tsv:1"):
        call_command(
            "evaluate",
            "--queries",
            str(tiny_dataset / "queries.jsonl"),
            "--qrels",
            str(tiny_dataset / "bad.tsv"),
        )
    with pytest.raises(CommandError, match="no such file"):
        call_command(
            "evaluate",
            "--queries",
            str(tiny_dataset / "nope.jsonl"),
            "--qrels",
            str(tiny_dataset / "qrels.tsv"),
        )
