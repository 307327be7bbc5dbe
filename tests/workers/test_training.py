"""Training the offline projection head: the held-out split, learning on a small real subset of art-dev,
details reviewed by catalogers as extra training data, and the train_head command."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.files import File
from django.core.management import CommandError, call_command

from collections_app.models import Artwork, ReviewState
from tests.factories import ArtworkFactory, DetailFactory
from workers.inference.offline.embedder import OfflineEmbedder
from workers.inference.offline.evaluation import ndcg_at, search_ndcg, summarise
from workers.inference.offline.head import DEFAULT_HEAD, ProjectionHead
from workers.inference.offline.text import get_encoder
from workers.inference.offline.training import (
    build_examples,
    evaluate_loss,
    fit,
    initial_head,
    is_held_out,
    read_art_dev,
    read_reviewed_details,
    train_head,
)


@pytest.fixture(scope="module")
def feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Features extracted once per module (a quarter of a second a picture)."""
    return tmp_path_factory.mktemp("offline-features")


def test_held_out_split_is_stable_and_about_the_asked_fraction(art_dev: Path) -> None:
    ids = [p.id for p in read_art_dev(art_dev)]
    held = [i for i in ids if is_held_out(i, 0.3)]
    assert held == [i for i in ids if is_held_out(i, 0.3)]
    assert 0.2 < len(held) / len(ids) < 0.4
    # A larger hold-out keeps every picture a smaller one held out.
    assert set(held) <= {i for i in ids if is_held_out(i, 0.5)}


def test_training_on_a_small_subset_improves_held_out_loss(art_dev: Path, feature_cache: Path) -> None:
    run = train_head(dataset=art_dev, holdout=0.3, limit=40, steps=80, cache_dir=feature_cache)
    metrics = run.metrics
    assert metrics["held_out_pictures"] > 5 and metrics["train_pictures"] > 20
    assert metrics["train_loss_last"] < metrics["train_loss_first"]
    assert metrics["held_out_loss"] < metrics["held_out_loss_untrained"]
    assert metrics["held_out_box_label_map"] > metrics["held_out_box_label_map_random"]
    # The head records what it saw, and none of it was held out.
    assert run.head.train_ids and not any(is_held_out(i, 0.3) for i in run.head.train_ids)
    assert "halo" in run.head.phrases


def test_fit_lowers_the_loss_it_optimises(art_dev: Path, feature_cache: Path) -> None:
    pictures = read_art_dev(art_dev)[:12]
    phrases = ["halo", "wings", "saint", "book"]
    examples = build_examples(pictures, phrases, cache_dir=feature_cache)
    head = initial_head(phrases, get_encoder().encode(phrases), np.ones(4, bool), examples.features)
    before = evaluate_loss(head, examples)
    fit(head, examples, steps=30)
    assert evaluate_loss(head, examples) < before


def test_a_trained_head_saves_loads_and_drives_the_embedder(
    art_dev: Path, feature_cache: Path, tmp_path: Path
) -> None:
    run = train_head(dataset=art_dev, limit=20, steps=10, cache_dir=feature_cache)
    path = tmp_path / "head.npz"
    run.head.save(path)
    assert path.stat().st_size < 3_000_000
    loaded = ProjectionHead.load(path)
    assert loaded.version == run.head.version
    assert loaded.train_ids == sorted(run.head.train_ids)
    assert loaded.phrases == run.head.phrases
    embedder = OfflineEmbedder(device="cpu", head_path=str(path))
    assert embedder.model_key.endswith(run.head.version)
    assert embedder.embed_texts(["halo"]).shape == (1, 384)


@pytest.mark.django_db
def test_reviewed_details_become_training_pictures(art_dev: Path, feature_cache: Path) -> None:
    artwork: Artwork = ArtworkFactory()  # type: ignore[assignment]  # factory_boy is untyped
    with (art_dev / "images" / "A0333.jpg").open("rb") as handle:
        artwork.image.save("A0333.jpg", File(handle))
    for i, state in enumerate([ReviewState.APPROVED, ReviewState.CORRECTED, ReviewState.APPROVED]):
        DetailFactory(artwork=artwork, label="unicorn", review_state=state, x=0.1 * i, y=0.1, w=0.3, h=0.3)
    DetailFactory(artwork=artwork, label="dragon", review_state=ReviewState.UNREVIEWED)
    DetailFactory(artwork=artwork, label="dragon", review_state=ReviewState.HIDDEN)
    DetailFactory(
        artwork=ArtworkFactory(), label="lily", review_state=ReviewState.APPROVED
    )  # no image: skipped

    pictures = read_reviewed_details()
    assert [p.id for p in pictures] == [f"artwork:{artwork.pk}"]
    assert sorted(label for _, label in pictures[0].boxes) == ["unicorn"] * 3

    run = train_head(dataset=art_dev, limit=12, steps=5, include_reviewed=True, cache_dir=feature_cache)
    assert f"artwork:{artwork.pk}" in run.head.train_ids
    assert "unicorn" in run.head.phrases and "dragon" not in run.head.phrases
    assert run.metrics["reviewed_pictures"] == 1


def test_train_head_command_writes_a_head_and_reports(art_dev: Path, tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    settings.SEMART_DATA_DIR = tmp_path
    out = tmp_path / "head.npz"
    stdout = StringIO()
    call_command(
        "train_head",
        "--dataset",
        str(art_dev),
        "--limit",
        "15",
        "--steps",
        "5",
        "--out",
        str(out),
        stdout=stdout,
        stderr=StringIO(),
    )
    report = json.loads(stdout.getvalue())
    assert report["out"] == str(out) and out.is_file()
    assert report["version"] == ProjectionHead.load(out).version
    assert report["held_out_pictures"] + report["train_pictures"] == 15


def test_train_head_command_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="metadata.jsonl"):
        call_command("train_head", "--dataset", str(tmp_path))
    with pytest.raises(CommandError, match="holdout"):
        call_command("train_head", "--dataset", str(tmp_path.parent), "--holdout", "1.5")


def test_ndcg_at_ten() -> None:
    assert ndcg_at(np.array([1.0, 0.0, 0.0]), 1) == pytest.approx(1.0)
    assert ndcg_at(np.array([0.0, 1.0, 0.0]), 1) == pytest.approx(1 / np.log2(3))
    assert ndcg_at(np.array([0.0] * 10 + [1.0]), 1) == 0.0
    assert ndcg_at(np.array([1.0, 0.0, 1.0]), 2) == pytest.approx((1 + 1 / 2) / (1 + 1 / np.log2(3)))


def test_search_evaluation_uses_only_pictures_the_head_never_saw(art_dev: Path, feature_cache: Path) -> None:
    head = ProjectionHead.load(DEFAULT_HEAD)
    pictures = read_art_dev(art_dev)
    unseen = [p.id for p in pictures if p.id not in set(head.train_ids) and p.boxes][:8]
    head.train_ids = [p.id for p in pictures if p.id not in unseen]  # evaluate on 8 held-out pictures only
    results = search_ndcg(head, art_dev, cache_dir=feature_cache)
    assert results and all(0.0 <= r.ndcg <= 1.0 and 0.0 < r.random_ndcg <= 1.0 for r in results)
    assert all(r.pool <= len(unseen) and r.n_relevant >= 1 for r in results)
    summary = summarise(results)
    assert set(summary) <= {"detail", "iconography"} and summary
