"""The offline detector's context prior (workers/inference/offline/context.py): its geometry with known
numbers, what it learns from boxes, its file, and the shipped prior placing books on real art-dev pictures
the head never saw."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workers.inference.base import ModelLoadError
from workers.inference.offline import context
from workers.inference.offline.context import ContextPrior, from_face, in_picture
from workers.inference.offline.detector import OfflineDetector
from workers.inference.offline.localiser import box_iou, logit
from workers.inference.offline.training import Picture, read_art_dev, readable_label


@pytest.fixture(scope="module")
def detector() -> OfflineDetector:
    model = OfflineDetector(device="cpu")
    model.load()
    return model


def _open(art_dev: Path, image_id: str) -> Image.Image:
    with Image.open(art_dev / "images" / f"{image_id}.jpg") as image:
        return image.convert("RGB")


def test_boxes_are_described_in_the_picture_and_from_a_face_with_known_numbers() -> None:
    box = np.array([[0.2, 0.4, 0.2, 0.1]])
    # Square picture: centre (0.3, 0.45); side sqrt(0.02) of the picture.
    assert in_picture(box, (100, 100)) == pytest.approx(np.array([[0.3, 0.45, 0.5 * np.log(0.02)]]))
    # Twice as wide as tall: the area counts in the shorter side, so the same fractions are twice as large.
    assert in_picture(box, (200, 100))[0, 2] == pytest.approx(0.5 * np.log(0.04))
    # From a 10-px face centred at (25, 25): the box's centre (30, 45) is 0.5 right and 2 below, 2 faces
    # wide and 1 tall.
    face = (0.2, 0.2, 0.1, 0.1)
    assert from_face(box, face, (100, 100)) == pytest.approx(np.array([[0.5, 2.0, np.log(2.0), np.log(1.0)]]))
    # The face's longer side in pixels is the unit: on a 200 x 100 picture the face is 20 x 10 px.
    assert from_face(box, face, (200, 100))[0, :2] == pytest.approx([(60 - 50) / 20, (45 - 25) / 20])


def _books_below_faces(n: int, seed: int = 0) -> tuple[list, dict]:  # type: ignore[type-arg]
    """Synthetic square pictures: a face (0.1 wide) somewhere in the upper half and a book 1.5 faces wide,
    1 tall, its centre 2 faces below the face's; also a crown in the corner. The pictures and the faces."""
    rng = np.random.default_rng(seed)
    pictures, faces = [], {}
    for i in range(n):
        fx, fy = rng.uniform(0.1, 0.7), rng.uniform(0.05, 0.3)
        book = (fx - 0.025, fy + 0.2, 0.15, 0.1)
        pictures.append((f"p{i}", (100, 100), [(book, "book"), ((0.0, 0.0, 0.1, 0.1), "crown")]))
        faces[f"p{i}"] = [(fx, fy, 0.1, 0.1)]
    return pictures, faces


def test_the_prior_learns_where_a_thing_sits_from_a_face() -> None:
    pictures, faces = _books_below_faces(30)
    faces["p0"].append((0.9, 0.9, 0.05, 0.05))  # a second face: each box is measured from its nearest
    prior = context.fit(pictures, ["book"], faces.__getitem__)
    assert prior.phrases == ["book"] and prior.train_ids == sorted(faces)
    assert prior.in_picture["book"].shape == (30, 3) and prior.from_face["book"].shape == (30, 4)
    assert prior.from_face["book"] == pytest.approx(np.tile([0.0, 2.0, np.log(1.5), 0.0], (30, 1)))

    # A new picture with a face at (0.5, 0.1): of two book-sized windows where books were seen in the
    # picture, the one 2 faces below the face is preferred to the one off to its side, because of the face.
    face = (0.5, 0.1, 0.1, 0.1)
    below, aside = (0.475, 0.3, 0.15, 0.1), (0.225, 0.3, 0.15, 0.1)
    windows = np.array([below, aside])
    alone = prior.log_prior("book", windows, (100, 100))
    with_face = prior.log_prior("book", windows, (100, 100), [face])
    assert abs(alone[0] - alone[1]) < 1 and with_face[0] > with_face[1] + 5
    near = context.density(
        prior.from_face["book"], from_face(windows, face, (100, 100)), context.FROM_FACE_BANDWIDTH
    )
    assert with_face - alone == pytest.approx(np.log(near + context.FLOOR))
    # A phrase the prior was not fitted on changes nothing; a window where no box ever was is floored.
    assert prior.log_prior("crown", windows, (100, 100), [face]).tolist() == [0.0, 0.0]
    far = prior.log_prior("book", np.array([[0.9, 0.9, 0.01, 0.01]]), (100, 100))
    assert np.isfinite(far).all() and far[0] == pytest.approx(np.log(context.FLOOR), abs=1e-3)


def test_pictures_without_faces_teach_only_where_in_the_picture() -> None:
    pictures, _ = _books_below_faces(10)
    prior = context.fit(pictures, ["book", "crown"], lambda _: [])
    assert prior.in_picture["book"].shape == (10, 3) and not prior.uses_faces("book")
    assert prior.phrases == ["book", "crown"]
    assert context.fit(pictures, ["scroll"], lambda _: []).phrases == []


def test_the_prior_file_round_trips_and_bad_files_are_clear_errors(tmp_path: Path) -> None:
    pictures, faces = _books_below_faces(12)
    prior = context.fit(pictures, ["book", "crown"], lambda p: faces[p] if p < "p5" else [])
    prior.save(tmp_path / "ctx.npz")
    loaded = ContextPrior.load(tmp_path / "ctx.npz")
    assert loaded.version == prior.version and loaded.phrases == prior.phrases
    assert loaded.train_ids == prior.train_ids and loaded.metadata == prior.metadata
    windows = np.array([[0.1, 0.3, 0.15, 0.1], [0.6, 0.6, 0.2, 0.2]])
    assert loaded.log_prior("book", windows, (80, 120), [(0.1, 0.1, 0.1, 0.1)]) == pytest.approx(
        prior.log_prior("book", windows, (80, 120), [(0.1, 0.1, 0.1, 0.1)]), abs=1e-4
    )
    moved = context.fit(_books_below_faces(12, seed=1)[0], ["book"], lambda _: [])
    assert moved.version != prior.version

    with pytest.raises(ModelLoadError, match="train_context"):
        ContextPrior.load(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a prior")
    with pytest.raises(ModelLoadError, match="not a context prior"):
        ContextPrior.load(tmp_path / "bad.npz")


def test_the_detector_places_a_book_with_the_prior_and_names_it(
    detector: OfflineDetector, art_dev: Path
) -> None:
    prior = detector.context
    assert prior is not None and set(prior.phrases) == set(context.CONTEXT_PHRASES)
    assert detector.model_key.endswith(f"+ctx-{prior.version}")
    assert "A0552" not in prior.train_ids  # held out from the head, and so from the prior
    picture = _open(art_dev, "A0552")  # a saint holding a book under a painted face
    (book,) = _book_boxes(next(p for p in read_art_dev(art_dev) if p.id == "A0552"))
    placed = {r.label: r for r in detector.place(picture, detector.detect(picture))}
    plain = OfflineDetector(device="cpu", context_path="")
    assert plain.context is None and "+ctx-" not in plain.model_key
    alone = {r.label: r for r in plain.place(picture, plain.detect(picture))}
    assert placed["book"].attributes == {
        "placer": detector.placer.version,
        "on": "window",
        "context": prior.version,
    }  # type: ignore[union-attr]
    assert "context" not in alone["book"].attributes
    assert box_iou(placed["book"].box, book[None])[0] >= 0.5 > box_iou(alone["book"].box, book[None])[0]
    # The confidence stays the placer's probability for the window chosen; other phrases are unchanged.
    assert 0 < placed["book"].confidence <= 1
    for label in placed.keys() - set(prior.phrases):
        assert placed[label].box == alone[label].box


def _book_boxes(picture: Picture) -> np.ndarray:
    return np.array([box for box, label in picture.boxes if readable_label(label) == "book"]).reshape(-1, 4)


def test_the_shipped_prior_places_books_better_on_unseen_pictures(
    detector: OfflineDetector, art_dev: Path
) -> None:
    prior, placer = detector.context, detector.placer
    assert prior is not None and placer is not None
    seen_by_head = set(detector.embedder.head.train_ids)
    unseen = [p for p in read_art_dev(art_dev) if p.id not in seen_by_head and len(_book_boxes(p))]
    column = placer.phrases.index("book")
    hits = {"placer": 0, "with_prior": 0}
    for picture in unseen:
        rgb = _open(art_dev, picture.id)
        windows, _, placed = detector.scored_windows(rgb, placer)
        faces = [f.box for f in detector.faces.faces(rgb) if f.score >= detector.face_threshold]
        alone = logit(placed[:, column])
        with_prior = alone + prior.log_prior("book", np.asarray(windows), rgb.size, faces)
        for name, ranked in (("placer", alone), ("with_prior", with_prior)):
            hits[name] += int(box_iou(windows[int(np.argmax(ranked))], _book_boxes(picture)).max() >= 0.3)
    # Measured (benchmarks/context_prior.py): 11 of the 22 against 6.
    assert len(unseen) >= 20
    assert hits["with_prior"] >= hits["placer"] + 3, hits


def test_train_context_command_writes_and_reports(art_dev: Path, tmp_path: Path) -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    out = io.StringIO()
    dataset = ["--dataset", str(art_dev)]
    call_command(
        "train_context", *dataset, "--phrases", "shield", "--out", str(tmp_path / "c.npz"), stdout=out
    )
    report = json.loads(out.getvalue())
    saved = ContextPrior.load(tmp_path / "c.npz")
    assert saved.version == report["version"] and saved.phrases == ["shield"]
    assert report["train_pictures"] == len(saved.train_ids) > 5
    counts = report["held_out_hits"]["shield"]
    assert counts["pictures"] >= 1 and 0 <= counts["placer"] <= counts["pictures"]
    assert saved.metadata["held_out_hits"] == report["held_out_hits"]
    with pytest.raises(CommandError, match="not phrases the placer places: unicorn"):
        call_command(
            "train_context",
            "--dataset",
            str(art_dev),
            "--phrases",
            "unicorn",
            "--out",
            str(tmp_path / "u.npz"),
        )
    assert not (tmp_path / "u.npz").exists()


def test_a_prior_fitted_beside_another_placer_is_used_and_said_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shipped = ContextPrior.load(context.DEFAULT_CONTEXT)
    assert shipped.metadata["placer"] == OfflineDetector(device="cpu").placer.version  # type: ignore[union-attr]
    shipped.metadata["placer"] = "another-placer"
    shipped.save(tmp_path / "other.npz")
    with caplog.at_level("WARNING", logger="workers.inference.offline.detector"):
        detector = OfflineDetector(device="cpu", context_path=str(tmp_path / "other.npz"))
        assert detector.context is not None and detector.context.version == shipped.version
    assert "fitted beside placer another-placer" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="workers.inference.offline.detector"):
        assert OfflineDetector(device="cpu").context is not None
    assert "fitted beside" not in caplog.text
