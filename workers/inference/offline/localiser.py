"""The localiser: which windows of a picture sit *on* a thing, not merely around it.

The projection head answers "is there a halo in this window?", and every window around a halo says yes:
the detector's best window for a label rarely overlapped the true box (FINDINGS.md; region hit@10 0.08
on art-dev's held-out pictures, about chance). The localiser is trained for the other question: for each
detector phrase, a logistic score of a window that is high when the window's IoU with a box of that phrase
is at least ``POSITIVE_IOU``, and low below ``NEGATIVE_IOU`` (windows in between are not used). Its inputs
are the window's pooled dense-grid features (standardised), the head's own score for the phrase (as a
logit) and the window's log area, so it learns "contains the thing, and tightly". ``fit`` learns it with
one of two losses and says what each measured.

Trained by ``manage.py train_localiser`` on the pictures the head was trained on (``train_ids``), so the
head's held-out pictures stay unseen by both. Stored like the head: a small float16 .npz with its phrases,
training ids, the head version it was trained with, and a version digest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workers.inference.base import Box, ModelLoadError
from workers.inference.offline.head import ASSETS, ProjectionHead

DEFAULT_LOCALISER = ASSETS / "localiser.npz"
# The placer: a localiser trained with the listwise loss, which puts each phrase's top window on the thing
# more often, but whose windows search worse (docs/evaluation.md): the detector uses it only to place
# what it shows (``OfflineDetector.place``).
DEFAULT_PLACER = ASSETS / "placer.npz"
# Window sides (of the picture's shorter side) the localiser was trained on and the detector slides:
# 0.14 reaches the small things (haloes, books, crowns: median box 1-4% of the picture).
WINDOW_SIDES = (0.5, 0.33, 0.2, 0.14)
POSITIVE_IOU = 0.35
NEGATIVE_IOU = 0.15
MIN_POSITIVES = 5  # phrases with fewer positive windows get no localiser


def box_iou(box: Box | np.ndarray, windows: np.ndarray) -> np.ndarray:
    """IoU of one relative xywh box with each row of an (n, 4) array of windows."""
    x1 = np.maximum(windows[:, 0], box[0])
    y1 = np.maximum(windows[:, 1], box[1])
    x2 = np.minimum(windows[:, 0] + windows[:, 2], box[0] + box[2])
    y2 = np.minimum(windows[:, 1] + windows[:, 3], box[1] + box[3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    return inter / np.maximum(windows[:, 2] * windows[:, 3] + box[2] * box[3] - inter, 1e-12)


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), p clipped to [1e-4, 1 - 1e-4]."""
    p = np.clip(np.asarray(p, dtype=np.float32), 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


@dataclass
class Localiser:
    phrases: list[str]  # the detector phrases it scores (a subset of the head's)
    weight: np.ndarray  # (1280, n_phrases)
    contains_weight: np.ndarray  # (n_phrases,) on the head's logit for the phrase
    area_weight: np.ndarray  # (n_phrases,) on log(window area)
    bias: np.ndarray  # (n_phrases,)
    feature_mean: np.ndarray  # (1280,)
    feature_scale: np.ndarray  # (1280,)
    head_version: str
    train_ids: list[str] = field(default_factory=list)
    metadata: dict[str, object] = field(default_factory=dict)

    @property
    def version(self) -> str:
        digest = hashlib.sha256()
        for array in (self.weight, self.contains_weight, self.area_weight, self.bias):
            digest.update(np.ascontiguousarray(array, dtype=np.float16).tobytes())
        digest.update(json.dumps([self.phrases, self.head_version]).encode())
        return digest.hexdigest()[:12]

    def head_scores(self, features: np.ndarray, head: ProjectionHead) -> np.ndarray:
        """The head's (n, n_phrases) probabilities that each window contains each of these phrases."""
        columns = [head.phrases.index(p) for p in self.phrases]
        return head.label_scores(head.project(features))[:, columns]

    def probabilities(self, features: np.ndarray, head_scores: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """(n, n_phrases) probabilities that each window sits on the phrase's thing, from the windows'
        pooled features and the head's probabilities (``head_scores``) for the same windows."""
        logits = self._logits(
            np.atleast_2d(np.asarray(features, dtype=np.float32)),
            logit(head_scores),
            np.asarray(windows, dtype=np.float32),
        )
        return 1.0 / (1.0 + np.exp(-logits))

    def _logits(self, features: np.ndarray, contains: np.ndarray, windows: np.ndarray) -> np.ndarray:
        standard = (features - self.feature_mean) / self.feature_scale
        area = np.log(np.maximum(windows[:, 2] * windows[:, 3], 1e-6))[:, None]
        return (
            standard @ self.weight.astype(np.float32)
            + contains * self.contains_weight
            + area * self.area_weight
            + self.bias
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = dict(self.metadata, version=self.version, head_version=self.head_version)
        with path.open("wb") as handle:
            np.savez_compressed(
                handle,
                weight=self.weight.astype(np.float16),
                contains_weight=self.contains_weight.astype(np.float32),
                area_weight=self.area_weight.astype(np.float32),
                bias=self.bias.astype(np.float32),
                feature_mean=self.feature_mean.astype(np.float32),
                feature_scale=self.feature_scale.astype(np.float32),
                phrases=np.array(json.dumps(self.phrases)),
                train_ids=np.array(json.dumps(sorted(self.train_ids))),
                metadata=np.array(json.dumps(meta)),
            )

    @classmethod
    def load(cls, path: Path) -> Localiser:
        if not path.is_file():
            raise ModelLoadError(f"localiser not found at {path}; train one with `manage.py train_localiser`")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["metadata"]))
                meta.pop("version", None)
                return cls(
                    phrases=list(json.loads(str(data["phrases"]))),
                    weight=data["weight"].astype(np.float32),
                    contains_weight=data["contains_weight"],
                    area_weight=data["area_weight"],
                    bias=data["bias"],
                    feature_mean=data["feature_mean"],
                    feature_scale=data["feature_scale"],
                    head_version=str(meta.pop("head_version")),
                    train_ids=list(json.loads(str(data["train_ids"]))),
                    metadata=meta,
                )
        except (KeyError, ValueError, OSError) as exc:
            raise ModelLoadError(f"{path} is not a localiser file: {exc}") from exc


# --- Training --------------------------------------------------------------------------------------------


@dataclass
class WindowSet:
    """Every window of the training pictures: features, the head's logits, areas, and per phrase the best
    IoU with a box of that phrase."""

    features: np.ndarray  # (n, 1280)
    contains: np.ndarray  # (n, n_phrases)
    windows: np.ndarray  # (n, 4)
    best_iou: np.ndarray  # (n, n_phrases)
    picture_of: np.ndarray  # (n,) index into the pictures

    def subset(
        self, rows: np.ndarray | slice = slice(None), columns: list[int] | slice = slice(None)
    ) -> WindowSet:
        """These windows (rows) and phrases (columns) only."""
        return WindowSet(
            features=self.features[rows],
            contains=self.contains[rows][:, columns],
            windows=self.windows[rows],
            best_iou=self.best_iou[rows][:, columns],
            picture_of=self.picture_of[rows],
        )


def window_set(
    pictures: Sequence[Any],
    head: ProjectionHead,
    phrases: Sequence[str],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> WindowSet:
    """Pictures are ``training.Picture`` (path and boxes); features come from one dense grid a picture."""
    from PIL import Image

    from workers.inference.offline.detector import sliding_windows
    from workers.inference.offline.effnet import get_effnet
    from workers.inference.offline.training import readable_label

    index = {p: i for i, p in enumerate(phrases)}
    columns = [head.phrases.index(p) for p in phrases]
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for n, picture in enumerate(pictures):
        with Image.open(picture.path) as image:
            rgb = image.convert("RGB")
            grid = get_effnet().dense_grid(rgb)
            windows = np.asarray(sliding_windows(*rgb.size, sides=WINDOW_SIDES), dtype=np.float32)
        features = np.stack([grid.pool(tuple(w)) for w in windows]).astype(np.float32)
        contains = logit(head.label_scores(head.project(features))[:, columns])
        best = np.zeros((len(windows), len(phrases)), dtype=np.float32)
        for box, label in picture.boxes:
            j = index.get(readable_label(label))
            if j is not None:
                best[:, j] = np.maximum(best[:, j], box_iou(box, windows))
        parts.append((features, contains, windows, best))
        if progress:
            progress(n + 1, len(pictures))
    return WindowSet(
        features=np.concatenate([p[0] for p in parts]),
        contains=np.concatenate([p[1] for p in parts]),
        windows=np.concatenate([p[2] for p in parts]),
        best_iou=np.concatenate([p[3] for p in parts]),
        picture_of=np.concatenate([np.full(len(p[0]), i) for i, p in enumerate(parts)]),
    )


LOSSES = ("pointwise", "listwise")
DEFAULT_L2 = {"pointwise": 0.1, "listwise": 1.0}


def fit(
    data: WindowSet,
    phrases: list[str],
    *,
    head_version: str,
    loss: str = "pointwise",
    steps: int = 300,
    learning_rate: float = 0.01,
    l2: float | None = None,
    batch: int = 8192,
    seed: int = 0,
) -> Localiser:
    """One linear model per phrase over the window's standardised features, the head's logit and the
    log area; phrases with fewer than MIN_POSITIVES positive windows (IoU >= POSITIVE_IOU) are dropped.

    - ``pointwise`` (the shipped localiser): weighted logistic regression over all windows of all
      pictures, positives (IoU >= POSITIVE_IOU) against negatives (< NEGATIVE_IOU), positives up-weighted
      to balance (at most 50x), Adam on mini-batches of ``batch``. ``l2`` 0.1 was chosen on a quarter of
      the training pictures held back for it (top-window hit 0.196 / 0.223 / 0.237 / 0.201 at 0.001 /
      0.01 / 0.1 / 1).
    - ``listwise``: for each training picture with a box of the phrase, a softmax over the picture's
      windows should put its mass on the positive ones (full batch), the detector's own question ("which
      of this picture's windows?"); then a scale and bias per phrase are fitted by the pointwise loss
      (``_calibrate``), so the detector's ``localiser_threshold`` keeps its meaning. ``l2`` 1.0 was
      chosen the same way (0.26 / 0.28 / 0.31 / 0.32 / 0.30 / 0.25 at 0.03 / 0.1 / 0.3 / 1 / 3 / 10,
      against 0.19 for pointwise on those pictures). It places the region shown for a query better and
      ranks artworks worse through the details it keeps (docs/models.md has both): not the default, but
      the detector's placer (``DEFAULT_PLACER``), which only places what is shown.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {loss!r}")
    l2 = DEFAULT_L2[loss] if l2 is None else l2
    order = np.argsort(data.picture_of, kind="stable")  # the listwise loss wants each picture's rows together
    best_iou, picture_of = data.best_iou[order], data.picture_of[order]
    positive = best_iou >= POSITIVE_IOU
    used = (best_iou < NEGATIVE_IOU) | positive
    keep = [j for j in range(len(phrases)) if positive[:, j].sum() >= MIN_POSITIVES]
    features = data.features[order]
    mean = features.mean(axis=0)
    scale = features.std(axis=0) + 1e-6
    x = (features - mean) / scale
    contains = data.contains[order][:, keep]
    windows = data.windows[order]
    area = np.log(np.maximum(windows[:, 2] * windows[:, 3], 1e-6))[:, None]
    positive, used = positive[:, keep], used[:, keep]
    if loss == "pointwise":
        weight, contains_weight, area_weight, bias = _fit_pointwise(
            x, contains, area, positive, used, steps=steps, batch=batch, learning_rate=learning_rate, l2=l2,
            seed=seed,
        )  # fmt: skip
    else:
        weight, contains_weight, area_weight = _fit_listwise(
            x, contains, area, positive, picture_of, steps=steps, learning_rate=learning_rate, l2=l2
        )
        slope, bias = _calibrate(x @ weight + contains * contains_weight + area * area_weight, positive, used)
        weight, contains_weight, area_weight = weight * slope, contains_weight * slope, area_weight * slope
    return Localiser(
        phrases=[phrases[j] for j in keep],
        weight=weight,
        contains_weight=contains_weight,
        area_weight=area_weight,
        bias=bias,
        feature_mean=mean.astype(np.float32),
        feature_scale=scale.astype(np.float32),
        head_version=head_version,
        metadata={
            "steps": steps,
            "loss": loss,
            "l2": l2,
            "positive_iou": POSITIVE_IOU,
            "negative_iou": NEGATIVE_IOU,
        },
    )


class _Adam:
    def __init__(self, params: list[np.ndarray], learning_rate: float) -> None:
        self.params, self.learning_rate, self.steps = params, learning_rate, 0
        self.first = [np.zeros_like(p) for p in params]
        self.second = [np.zeros_like(p) for p in params]

    def step(self, grads: list[np.ndarray]) -> None:
        self.steps += 1
        for i, grad in enumerate(grads):
            self.first[i] = 0.9 * self.first[i] + 0.1 * grad
            self.second[i] = 0.999 * self.second[i] + 0.001 * grad * grad
            corrected = self.first[i] / (1 - 0.9**self.steps)
            spread = np.sqrt(self.second[i] / (1 - 0.999**self.steps)) + 1e-8
            self.params[i] -= self.learning_rate * corrected / spread


def _fit_pointwise(
    x: np.ndarray,
    contains: np.ndarray,
    area: np.ndarray,
    positive: np.ndarray,
    used: np.ndarray,
    *,
    steps: int,
    batch: int,
    learning_rate: float,
    l2: float,
    seed: int,
) -> list[np.ndarray]:
    target = positive.astype(np.float32)
    mask = used.astype(np.float32)
    n_pos = target.sum(axis=0)
    pos_weight = np.minimum((mask.sum(axis=0) - n_pos) / np.maximum(n_pos, 1), 50.0)
    k = target.shape[1]
    params = [
        np.zeros((x.shape[1], k), np.float32),
        np.full(k, 0.5, np.float32),
        np.zeros(k, np.float32),
        np.full(k, -3.0, np.float32),
    ]
    adam = _Adam(params, learning_rate)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        rows = rng.choice(len(x), size=min(batch, len(x)), replace=False)
        xb, cb, ab, tb, mb = x[rows], contains[rows], area[rows], target[rows], mask[rows]
        z = xb @ params[0] + cb * params[1] + ab * params[2] + params[3]
        weight = mb * np.where(tb > 0, pos_weight, 1.0)
        g = weight * (1.0 / (1.0 + np.exp(-z)) - tb) / np.maximum(weight.sum(axis=0), 1.0)
        adam.step([xb.T @ g + l2 * params[0], (g * cb).sum(axis=0), (g * ab).sum(axis=0), g.sum(axis=0)])
    return params


def _fit_listwise(
    x: np.ndarray,
    contains: np.ndarray,
    area: np.ndarray,
    positive: np.ndarray,
    picture_of: np.ndarray,
    *,
    steps: int,
    learning_rate: float,
    l2: float,
) -> list[np.ndarray]:
    """Rows sorted by picture. The loss is averaged over the (picture, phrase) groups with a positive
    window; a group's target spreads evenly over its positive windows."""
    starts = np.flatnonzero(np.r_[True, picture_of[1:] != picture_of[:-1]])
    lengths = np.diff(np.r_[starts, len(x)])
    target = positive.astype(np.float32)
    group_positives = np.add.reduceat(target, starts, axis=0)  # (pictures, k)
    in_group = np.repeat(group_positives > 0, lengths, axis=0)  # (n, k)
    target /= np.maximum(np.repeat(group_positives, lengths, axis=0), 1.0)
    groups = max(int((group_positives > 0).sum()), 1)
    k = target.shape[1]
    params = [np.zeros((x.shape[1], k), np.float32), np.full(k, 0.5, np.float32), np.zeros(k, np.float32)]
    adam = _Adam(params, learning_rate)
    for _ in range(steps):
        z = x @ params[0] + contains * params[1] + area * params[2]
        z -= np.repeat(np.maximum.reduceat(z, starts, axis=0), lengths, axis=0)
        e = np.exp(z)
        softmax = e / np.repeat(np.add.reduceat(e, starts, axis=0), lengths, axis=0)
        g = np.where(in_group, softmax - target, 0.0).astype(np.float32) / groups
        adam.step([x.T @ g + l2 * params[0], (g * contains).sum(axis=0), (g * area).sum(axis=0)])
    return params


def _calibrate(scores: np.ndarray, positive: np.ndarray, used: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column, ``slope`` and ``bias`` of ``sigmoid(slope * score + bias)`` fitted on the ``used``
    rows by ``_platt``."""
    fitted = [_platt(scores[used[:, j], j], positive[used[:, j], j]) for j in range(scores.shape[1])]
    return np.array([f[0] for f in fitted], np.float32), np.array([f[1] for f in fitted], np.float32)


def _platt(
    raw: np.ndarray, positive: np.ndarray, *, iterations: int = 50, ridge: float = 1e-3
) -> tuple[float, float]:
    """Weighted logistic loss (positives up-weighted to balance the negatives, at most 50x) by Newton's
    method on the standardised score, with a small ridge and step halving: a phrase whose windows separate
    (nearly) perfectly gets a steep but finite slope (plain Newton ran a bias to 1e10 on art-dev). The
    slope is kept positive: calibration may not reverse the ranking."""
    raw, y = raw.astype(np.float64), positive.astype(np.float64)
    centre, spread = raw.mean(), raw.std() + 1e-6
    design = np.stack([(raw - centre) / spread, np.ones_like(raw)], axis=1)
    n_pos = y.sum()
    w = np.where(y > 0, min((len(y) - n_pos) / max(n_pos, 1.0), 50.0), 1.0)
    w /= w.sum()

    def loss(theta: np.ndarray) -> float:
        z = design @ theta
        return float(w @ (np.logaddexp(0.0, z) - y * z) + ridge * theta @ theta / 2)

    theta = np.zeros(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ theta)))
        gradient = design.T @ (w * (p - y)) + ridge * theta
        hessian = (design * (w * p * (1 - p))[:, None]).T @ design + ridge * np.eye(2)
        step, before = np.linalg.solve(hessian, gradient), loss(theta)
        while loss(theta - step) > before and np.abs(step).max() > 1e-8:
            step /= 2
        theta -= step
    slope = max(float(theta[0]), 1e-3) / spread
    return slope, float(theta[1]) - slope * centre


def region_hit(localiser: Localiser, data: WindowSet, *, iou: float = 0.3) -> dict[str, float]:
    """On pictures it was not trained on (``data`` built with ``localiser.phrases``): for each picture and
    phrase with a box there, does the top window by the localiser, and by the head's own score (how the
    detector chose before), hit a box of the phrase at ``iou``? ``oracle``: does any window."""
    hits: dict[str, list[float]] = {"localiser": [], "head": [], "oracle": []}
    for picture in np.unique(data.picture_of):
        rows = np.flatnonzero(data.picture_of == picture)
        logits = localiser._logits(data.features[rows], data.contains[rows], data.windows[rows])
        for j in range(len(localiser.phrases)):
            if not (data.best_iou[rows, j] > 0).any():
                continue  # no box of this phrase in the picture
            good = data.best_iou[rows, j] >= iou
            hits["localiser"].append(float(good[np.argmax(logits[:, j])]))
            hits["head"].append(float(good[np.argmax(data.contains[rows, j])]))
            hits["oracle"].append(float(good.any()))
    out: dict[str, float] = {k: round(float(np.mean(v)), 4) if v else float("nan") for k, v in hits.items()}
    out["pairs"] = len(hits["localiser"])
    return out
