"""Fits the projection head on art-dev (and on details catalogers approved or corrected).

Examples are regions of pictures with the label phrases present in them: every labelled box, the whole
picture (its box labels and ICONCLASS subject texts), and a few seeded random windows (the labels of
boxes mostly inside them, so the head also learns what an empty window looks like). Features come from
the same dense grid the embedder uses at run time, so training and use see the same kind of feature.

A deterministic ~30 % of art-dev (by a stable hash of the image id) is held out; the ids the head was
trained on are recorded in the head file so any evaluation can leave them out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workers.inference.base import Box
from workers.inference.offline.effnet import FEATURE_DIM, get_effnet
from workers.inference.offline.head import TEXT_DIM, ProjectionHead
from workers.inference.offline.text import get_encoder

logger = logging.getLogger(__name__)

# art-dev's box labels are annotation keys ("aura", "christ_kid"); the head learns readable phrases, which
# is also what people type. Spelling variants of one thing share a phrase.
READABLE_LABELS: dict[str, str] = {
    "aura": "halo",
    "wing": "wings",
    "mary_and_child": "Virgin and Child",
    "mary": "the Virgin Mary",
    "christ": "Christ",
    "christ_hand": "blessing hand of Christ",
    "christ_child": "the Christ Child",
    "christ_kid": "the Christ Child",
    "church_father": "church father, bishop saint",
    "church_fathers": "church father, bishop saint",
    "christ_pantocrator": "Christ Pantocrator",
    "christ_crucifixion": "the crucified Christ",
    "christ_crucifiction": "the crucified Christ",
    "christ_cross": "the crucified Christ",
    "christ_face": "face of Christ",
    "christ_resurrected": "the risen Christ",
    "chris_resurrected": "the risen Christ",
    "christ_dead": "the dead Christ",
    "christ_baptism": "baptism of Christ",
    "st_george": "Saint George",
    "saint_george": "Saint George",
    "st_john": "Saint John",
    "father": "God the Father",
    "mary_dead": "the dead Virgin Mary",
    "maria_magdalena": "Mary Magdalene",
    "fire_tongue": "tongues of fire",
    "lazarus_tomb": "tomb of Lazarus",
    "fantasy_animal": "fantastic beast",
    "person": "person",
    "saint": "saint",
    "apostle": "apostle",
    "apostle_face": "face of an apostle",
}
MIN_BOXES_PER_LABEL = 3  # rarer labels give the loss nothing to learn from
WINDOWS_PER_IMAGE = 6
WINDOW_SIDES = (0.5, 0.33)


def readable_label(label: str) -> str:
    key = label.strip().lower()
    if key in READABLE_LABELS:
        return READABLE_LABELS[key]
    key = re.sub(r"^(st|saint)_", "Saint ", key)
    return key.replace("_", " ").strip()


def is_held_out(image_id: str, holdout: float) -> bool:
    """Stable across runs, machines and Python versions (unlike hash())."""
    digest = hashlib.sha1(image_id.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < holdout


@dataclass
class Picture:
    """One picture to learn from: its boxes (relative xywh, raw label) and whole-picture subject texts."""

    id: str
    path: Path
    boxes: list[tuple[Box, str]]
    subjects: list[str] = field(default_factory=list)


@dataclass
class Examples:
    """Region features and, per label phrase, 1 (present), 0 (absent) or masked (unknown)."""

    features: np.ndarray  # (n, 1280)
    targets: np.ndarray  # (n, n_phrases) float32 in {0, 1}
    mask: np.ndarray  # (n, n_phrases) float32: 0 where presence is unknown
    image_ids: list[str]
    kinds: list[str]  # "box" | "image" | "window"


def add_dataset_argument(parser: Any) -> None:
    """``--dataset`` of the training commands: an art-dev style folder, by default the shared art-dev."""
    from django.conf import settings

    parser.add_argument(
        "--dataset",
        type=Path,
        default=Path(settings.BASE_DIR).parent / "shared" / "datasets" / "art-dev",
        help="An art-dev style folder (metadata.jsonl with boxes, images/).",
    )


def read_art_dev(dataset: Path) -> list[Picture]:
    pictures = []
    with (dataset / "metadata.jsonl").open() as handle:
        for line in handle:
            row = json.loads(line)
            boxes = [(tuple(float(v) for v in b["bbox_rel"]), b["label"]) for b in row.get("boxes", [])]
            subjects = [s.strip() for s in (row.get("iconclass_en") or "").split(";") if s.strip()]
            pictures.append(
                Picture(id=row["id"], path=dataset / row["image_file"], boxes=boxes, subjects=subjects)  # type: ignore[arg-type]
            )
    return pictures


def read_reviewed_details() -> list[Picture]:
    """Details a cataloger approved or corrected, grouped by artwork, as pictures to learn from."""
    from collections_app.models import Detail

    by_artwork: dict[int, Picture] = {}
    for detail in Detail.objects.reviewed_for_training().exclude(label="").select_related("artwork"):
        artwork = detail.artwork
        if not artwork.image:
            continue
        picture = by_artwork.setdefault(
            artwork.pk, Picture(id=f"artwork:{artwork.pk}", path=Path(artwork.image.path), boxes=[])
        )
        picture.boxes.append(((detail.x, detail.y, detail.w, detail.h), detail.label))
    return list(by_artwork.values())


def _inside_fraction(inner: Box, outer: Box) -> float:
    ix = max(0.0, min(inner[0] + inner[2], outer[0] + outer[2]) - max(inner[0], outer[0]))
    iy = max(0.0, min(inner[1] + inner[3], outer[1] + outer[3]) - max(inner[1], outer[1]))
    return ix * iy / max(inner[2] * inner[3], 1e-9)


def _regions(picture: Picture) -> list[tuple[Box, str]]:
    """The regions of a picture to learn from, with their kind; windows seeded by the picture id."""
    regions: list[tuple[Box, str]] = [((0.0, 0.0, 1.0, 1.0), "image")]
    regions += [(box, "box") for box, _ in picture.boxes]
    rng = np.random.default_rng(int.from_bytes(hashlib.sha1(picture.id.encode()).digest()[:4], "big"))
    for i in range(WINDOWS_PER_IMAGE):
        side = WINDOW_SIDES[i % len(WINDOW_SIDES)]
        x, y = rng.uniform(0, 1 - side, size=2)
        regions.append(((float(x), float(y), side, side), "window"))
    return regions


def region_features(picture: Picture, regions: Sequence[Box], cache_dir: Path | None) -> np.ndarray:
    """Pooled dense-grid features of the regions, cached per picture (extraction is ~0.25 s a picture)."""
    key = hashlib.sha1(json.dumps([str(picture.path), [list(r) for r in regions]]).encode()).hexdigest()[:16]
    cached = cache_dir / f"{picture.id.replace(':', '_')}-{key}.npy" if cache_dir else None
    if cached is not None and cached.is_file():
        return np.load(cached).astype(np.float32)
    from PIL import Image

    with Image.open(picture.path) as image:
        grid = get_effnet().dense_grid(image)
    features = np.stack([grid.pool(box) for box in regions]).astype(np.float16)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.save(cached, features)
    return features.astype(np.float32)


def build_vocabulary(pictures: Iterable[Picture]) -> tuple[list[str], np.ndarray]:
    """Label phrases with enough boxes (detector labels) followed by whole-picture subject texts."""
    pictures = list(pictures)
    counts = Counter(readable_label(label) for p in pictures for _, label in p.boxes)
    detector = sorted(phrase for phrase, n in counts.items() if n >= MIN_BOXES_PER_LABEL)
    subjects = sorted({s for p in pictures for s in p.subjects} - set(detector))
    return detector + subjects, np.array([True] * len(detector) + [False] * len(subjects))


def build_examples(
    pictures: Sequence[Picture],
    phrases: Sequence[str],
    *,
    cache_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Examples:
    index = {phrase: i for i, phrase in enumerate(phrases)}
    features, targets, masks, ids, kinds = [], [], [], [], []
    for n, picture in enumerate(pictures):
        regions = _regions(picture)
        features.append(region_features(picture, [box for box, _ in regions], cache_dir))
        for box, kind in regions:
            target = np.zeros(len(phrases), dtype=np.float32)
            mask = np.ones(len(phrases), dtype=np.float32)
            for other, label in picture.boxes:
                j = index.get(readable_label(label))
                if j is None:
                    continue
                inside = _inside_fraction(other, box)
                big_enough = other[2] * other[3] >= 0.02 * box[2] * box[3]
                if other == box or kind == "image" or (inside >= 0.5 and big_enough):
                    target[j] = 1.0
                elif inside > 0.1 and not target[j]:
                    mask[j] = 0.0  # partly inside, or too small to show in the pooled feature: unknown
            if kind == "image":
                for subject in picture.subjects:
                    if subject in index:
                        target[index[subject]] = 1.0
            elif picture.subjects:
                # Whether a part of a picture "shows Saint Jerome" is not known from a whole-picture label.
                for subject in picture.subjects:
                    if subject in index:
                        mask[index[subject]] = 0.0
            targets.append(target)
            masks.append(mask)
            ids.append(picture.id)
            kinds.append(kind)
        if progress:
            progress(n + 1, len(pictures))
    return Examples(
        features=np.concatenate(features) if features else np.zeros((0, FEATURE_DIM), np.float32),
        targets=np.array(targets, dtype=np.float32).reshape(-1, len(phrases)),
        mask=np.array(masks, dtype=np.float32).reshape(-1, len(phrases)),
        image_ids=ids,
        kinds=kinds,
    )


@dataclass
class FitResult:
    head: ProjectionHead
    history: list[float]


def initial_head(
    phrases: list[str], embeddings: np.ndarray, detector: np.ndarray, features: np.ndarray, *, seed: int = 0
) -> ProjectionHead:
    """An untrained head: random projection, feature statistics from the data (the baseline to beat)."""
    rng = np.random.default_rng(seed)
    return ProjectionHead(
        weight=rng.normal(0, 1 / np.sqrt(FEATURE_DIM), size=(FEATURE_DIM, TEXT_DIM)).astype(np.float32),
        feature_mean=features.mean(axis=0).astype(np.float32),
        feature_scale=(features.std(axis=0) + 1e-3).astype(np.float32),
        phrases=list(phrases),
        phrase_embeddings=embeddings.astype(np.float32),
        detector_labels=detector,
        scale=10.0,
        bias=-3.0,
    )


def loss_and_grads(
    head: ProjectionHead, x: np.ndarray, y: np.ndarray, mask: np.ndarray, *, pos_weight: float, l2: float
) -> tuple[float, np.ndarray, float, float]:
    """Masked, positive-weighted logistic loss of ``scale * cos + bias`` and its gradients (W, scale, bias).

    ``x`` is already standardised."""
    z = x @ head.weight
    norm = np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    zn = z / norm
    cos = zn @ head.phrase_embeddings.T
    logits = head.scale * cos + head.bias
    weights = mask * (1.0 + (pos_weight - 1.0) * y)
    total = max(weights.sum(), 1.0)
    # log(1 + e^s) - y s, computed stably
    loss_terms = np.logaddexp(0.0, logits) - y * logits
    loss = float((weights * loss_terms).sum() / total + l2 * (head.weight**2).sum())
    d_logits = weights * (1.0 / (1.0 + np.exp(-logits)) - y) / total
    d_scale = float((d_logits * cos).sum())
    d_bias = float(d_logits.sum())
    d_zn = (head.scale * d_logits) @ head.phrase_embeddings
    d_z = (d_zn - zn * (d_zn * zn).sum(axis=1, keepdims=True)) / norm
    d_w = x.T @ d_z + 2 * l2 * head.weight
    return loss, d_w, d_scale, d_bias


def evaluate_loss(head: ProjectionHead, examples: Examples, *, pos_weight: float = 4.0) -> float:
    x = (examples.features - head.feature_mean) / head.feature_scale
    return loss_and_grads(head, x, examples.targets, examples.mask, pos_weight=pos_weight, l2=0.0)[0]


def fit(
    head: ProjectionHead,
    examples: Examples,
    *,
    steps: int = 100,
    learning_rate: float = 1e-3,
    pos_weight: float = 4.0,
    l2: float = 1e-3,
    seed: int = 0,
) -> FitResult:
    """Full-batch Adam on W, scale and bias (numpy only; a few thousand examples fit in memory)."""
    x = ((examples.features - head.feature_mean) / head.feature_scale).astype(np.float32)
    params = [head.weight.astype(np.float32), np.array(head.scale), np.array(head.bias)]
    first: list[np.ndarray] = [np.zeros_like(p, dtype=np.float32) for p in params]
    second: list[np.ndarray] = [np.zeros_like(p, dtype=np.float32) for p in params]
    history = []
    for step in range(1, steps + 1):
        head.weight, head.scale, head.bias = params[0], float(params[1]), float(params[2])
        loss, d_w, d_scale, d_bias = loss_and_grads(
            head, x, examples.targets, examples.mask, pos_weight=pos_weight, l2=l2
        )
        history.append(loss)
        for i, grad in enumerate((d_w, np.array(d_scale), np.array(d_bias))):
            first[i] = 0.9 * first[i] + 0.1 * grad
            second[i] = 0.999 * second[i] + 0.001 * grad**2
            update = (
                learning_rate * (first[i] / (1 - 0.9**step)) / (np.sqrt(second[i] / (1 - 0.999**step)) + 1e-8)
            )
            # scale and bias move on a larger scale than single weights
            params[i] = params[i] - update * (1.0 if i == 0 else 30.0)
        params[1] = np.clip(params[1], 1.0, 50.0)
    head.weight, head.scale, head.bias = params[0].astype(np.float32), float(params[1]), float(params[2])
    return FitResult(head=head, history=history)


def fit_low_rank(head: ProjectionHead, examples: Examples, *, rank: int | None, **options: Any) -> FitResult:
    """``fit`` inside the top ``rank`` principal directions of the standardised features.

    With ~300 pictures the full 1280 x 384 map memorises the training crops (held-out loss rises while
    training loss falls); restricting its input to the main directions of variation generalises better.
    The result is still one 1280 x 384 matrix (basis @ reduced weight), so the head file does not change."""
    x = (examples.features - head.feature_mean) / head.feature_scale
    if rank is None or rank >= x.shape[1] or len(x) <= rank:
        return fit(head, examples, **options)
    _, vectors = np.linalg.eigh((x.T @ x).astype(np.float64))
    basis = vectors[:, ::-1][:, :rank].astype(np.float32)  # (1280, rank), largest variance first
    reduced = Examples(
        features=x @ basis,
        targets=examples.targets,
        mask=examples.mask,
        image_ids=examples.image_ids,
        kinds=examples.kinds,
    )
    rng = np.random.default_rng(options.get("seed", 0))
    small = ProjectionHead(
        weight=rng.normal(0, 1 / np.sqrt(rank), size=(rank, TEXT_DIM)).astype(np.float32),
        feature_mean=np.zeros(rank, np.float32),
        feature_scale=np.ones(rank, np.float32),
        phrases=head.phrases,
        phrase_embeddings=head.phrase_embeddings,
        detector_labels=head.detector_labels,
        scale=head.scale,
        bias=head.bias,
    )
    result = fit(small, reduced, **options)
    head.weight = (basis @ small.weight).astype(np.float32)
    head.scale, head.bias = small.scale, small.bias
    return FitResult(head=head, history=result.history)


@dataclass
class TrainingRun:
    head: ProjectionHead
    metrics: dict[str, Any]


def train_head(
    *,
    dataset: Path,
    holdout: float = 0.3,
    include_reviewed: bool = False,
    cache_dir: Path | None = None,
    steps: int = 200,
    rank: int | None = 128,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TrainingRun:
    """Train on art-dev's non-held-out pictures (plus reviewed details); measure on the held-out ones."""
    pictures = read_art_dev(dataset)
    if limit is not None and limit < len(pictures):
        # Spread over the file: art-dev lists paintings first and annotated icons later.
        pictures = [pictures[int(i * len(pictures) / limit)] for i in range(limit)]
    train = [p for p in pictures if not is_held_out(p.id, holdout)]
    held = [p for p in pictures if is_held_out(p.id, holdout)]
    reviewed = read_reviewed_details() if include_reviewed else []
    phrases, detector = build_vocabulary(train + reviewed)
    embeddings = get_encoder().encode(phrases)
    train_examples = build_examples(train + reviewed, phrases, cache_dir=cache_dir, progress=progress)
    held_examples = build_examples(held, phrases, cache_dir=cache_dir, progress=progress)
    head = initial_head(phrases, embeddings, detector, train_examples.features)
    untrained_loss = evaluate_loss(head, held_examples) if held else float("nan")
    result = fit_low_rank(head, train_examples, rank=rank, steps=steps)
    head.train_ids = [p.id for p in train + reviewed]
    metrics: dict[str, Any] = {
        "train_pictures": len(train),
        "reviewed_pictures": len(reviewed),
        "held_out_pictures": len(held),
        "train_examples": len(train_examples.image_ids),
        "held_out_examples": len(held_examples.image_ids),
        "phrases": len(phrases),
        "detector_labels": int(detector.sum()),
        "train_loss_first": result.history[0],
        "train_loss_last": result.history[-1],
        "held_out_loss_untrained": untrained_loss,
        "held_out_loss": evaluate_loss(head, held_examples) if held else float("nan"),
        "scale": head.scale,
        "bias": head.bias,
    }
    if held:
        metrics.update(label_retrieval_map(head, held_examples))
    head.metadata = {
        "trained_on": str(dataset.name),
        "holdout": holdout,
        "include_reviewed": include_reviewed,
        "steps": steps,
        "rank": rank,
        "metrics": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()},
    }
    return TrainingRun(head=head, metrics=metrics)


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    hits = relevant[order].astype(bool)
    if not hits.any():
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def label_retrieval_map(head: ProjectionHead, examples: Examples) -> dict[str, float]:
    """Per detector label: rank the held-out box crops by the label's score; mean AP over labels with a
    positive, against the expected AP of a random order (about the positive rate)."""
    boxes = np.array([k == "box" for k in examples.kinds])
    if not boxes.any():
        return {}
    scores = head.label_scores(head.project(examples.features[boxes]))
    targets = examples.targets[boxes]
    aps, randoms = [], []
    for j in np.flatnonzero(head.detector_labels):
        if targets[:, j].sum() == 0:
            continue
        aps.append(average_precision(scores[:, j], targets[:, j]))
        randoms.append(float(targets[:, j].mean()))
    return {
        "held_out_box_label_map": float(np.mean(aps)) if aps else float("nan"),
        "held_out_box_label_map_random": float(np.mean(randoms)) if randoms else float("nan"),
        "held_out_box_labels_evaluated": float(len(aps)),
    }
