"""Where a thing usually sits: a prior over a picture's windows, learned from the boxes of training pictures.

The placer (localiser.py) judges each window by what its pixels show; for small held things (a book, a
blessing hand) it often prefers a window that merely resembles one. The prior adds where such a thing is
usually found, in two frames:

- **in the picture**: the box's centre (x, y, as fractions) and size (log of the square root of its area,
  in units of the picture's shorter side);
- **from a face** (when the face finder sees one, faces.py): the box's centre offset from the face's
  centre and its width and height, in face-sides (a book is held a face or two below the face and about
  as wide as it; the blessing hand is raised beside it).

Each is a Gaussian kernel density over the training boxes of the phrase (the face frame uses, for each
box, its picture's nearest face). A window's score for the phrase becomes the placer's logit plus the log
of each density (a floor keeps an unusual place possible): ``OfflineDetector._place`` picks the window
with the highest. It is learned, and its phrases chosen, on the pictures the head was trained on
(``manage.py train_context``; the choice: docs/evaluation.md and ``benchmarks/context_prior.py``).
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
from workers.inference.offline.head import ASSETS
from workers.inference.offline.localiser import logit

DEFAULT_CONTEXT = ASSETS / "context.npz"
LOCAL_CONTEXT_NAME = "offline-context.npz"
# Phrases whose placement the prior improved in a cross-validation inside the head's training pictures
# by more than the spread of the gain over folds (benchmarks/context_prior.py; docs/evaluation.md).
CONTEXT_PHRASES = ("book", "blessing hand of Christ", "shield", "the Christ Child")
# Kernel widths: centre x, y (fractions of the picture) and log size; in the face frame, centre offsets
# in face-sides and log width and height. Set once; 0.7x and 1.4x them placed fewer things
# (docs/evaluation.md).
IN_PICTURE_BANDWIDTH = np.array([0.12, 0.12, 0.3])
FROM_FACE_BANDWIDTH = np.array([0.75, 0.75, 0.35, 0.35])
FLOOR = 1e-4  # density added before the log: a window where no training box was is unlikely, not barred


def in_picture(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(n, 3) centre x, y and log side (square root of the area, in the picture's shorter side) of (n, 4)
    relative xywh boxes in a picture of ``size`` (width, height) pixels."""
    width, height = size
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    area = np.maximum(boxes[:, 2] * boxes[:, 3], 1e-12) * width * height / min(width, height) ** 2
    return np.stack(
        [boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2, 0.5 * np.log(area)], axis=1
    )


def from_face(boxes: np.ndarray, face: Box, size: tuple[int, int]) -> np.ndarray:
    """(n, 4) centre offsets (x, y downwards) and log width and height of (n, 4) relative xywh boxes,
    in units of the face's longer side (in pixels), from the face's centre."""
    width, height = size
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    fx, fy, fw, fh = face
    side = max(fw * width, fh * height)
    centre_x, centre_y = (fx + fw / 2) * width, (fy + fh / 2) * height
    return np.stack(
        [
            ((boxes[:, 0] + boxes[:, 2] / 2) * width - centre_x) / side,
            ((boxes[:, 1] + boxes[:, 3] / 2) * height - centre_y) / side,
            np.log(np.maximum(boxes[:, 2] * width, 1e-6) / side),
            np.log(np.maximum(boxes[:, 3] * height, 1e-6) / side),
        ],
        axis=1,
    )


def density(points: np.ndarray, at: np.ndarray, bandwidth: np.ndarray) -> np.ndarray:
    """Gaussian kernel density of ``points`` (m, d) at each row of ``at`` (n, d), without the
    normalising constant (only the comparison between windows matters); zeros without points."""
    if len(points) == 0:
        return np.zeros(len(at))
    scaled = (at[:, None, :] - points[None, :, :]) / bandwidth
    return np.exp(-0.5 * (scaled**2).sum(axis=-1)).mean(axis=1)


def nearest_face(box: Box, faces: Sequence[Box], size: tuple[int, int]) -> Box:
    """The face whose centre is nearest the box's centre, in face-sides: the one it belongs to."""
    offsets = [from_face(np.asarray([box]), face, size)[0, :2] for face in faces]
    return faces[int(np.argmin([np.hypot(*o) for o in offsets]))]


@dataclass
class ContextPrior:
    """Per phrase, the training boxes in each frame (``in_picture``, ``from_face``); see the module."""

    in_picture: dict[str, np.ndarray]  # phrase -> (n, 3)
    from_face: dict[str, np.ndarray]  # phrase -> (m, 4); a phrase's boxes in pictures with a face
    train_ids: list[str] = field(default_factory=list)
    metadata: dict[str, object] = field(default_factory=dict)

    @property
    def phrases(self) -> list[str]:
        return sorted(self.in_picture)

    @property
    def version(self) -> str:
        digest = hashlib.sha256()
        for phrase in self.phrases:
            digest.update(phrase.encode())
            for frame in (self.in_picture, self.from_face):
                digest.update(np.ascontiguousarray(frame.get(phrase, np.zeros((0,))), np.float32).tobytes())
        digest.update(
            json.dumps([IN_PICTURE_BANDWIDTH.tolist(), FROM_FACE_BANDWIDTH.tolist(), FLOOR]).encode()
        )
        return digest.hexdigest()[:12]

    def uses_faces(self, phrase: str) -> bool:
        return len(self.from_face.get(phrase, ())) > 0

    def log_prior(
        self, phrase: str, windows: np.ndarray, size: tuple[int, int], faces: Sequence[Box] = ()
    ) -> np.ndarray:
        """(n,) log density of each window (relative xywh) for the phrase: in the picture, plus from the
        face it fits best when there are faces (and the phrase has boxes near faces). Zeros for a phrase
        the prior does not know."""
        if phrase not in self.in_picture:
            return np.zeros(len(windows))
        windows = np.asarray(windows, dtype=np.float64)
        score = np.log(
            density(self.in_picture[phrase], in_picture(windows, size), IN_PICTURE_BANDWIDTH) + FLOOR
        )
        if faces and self.uses_faces(phrase):
            near = np.max(
                [
                    density(self.from_face[phrase], from_face(windows, f, size), FROM_FACE_BANDWIDTH)
                    for f in faces
                ],
                axis=0,
            )
            score += np.log(near + FLOOR)
        return score

    def rank(
        self,
        phrase: str,
        placed: np.ndarray,
        windows: np.ndarray,
        size: tuple[int, int],
        faces: Sequence[Box] = (),
    ) -> np.ndarray:
        """What the detector picks a window by: the placer's logit for the phrase (``placed``: its
        probability for each window) plus the log prior."""
        return logit(placed) + self.log_prior(phrase, windows, size, faces)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {}
        for n, phrase in enumerate(self.phrases):
            arrays[f"in_picture_{n}"] = self.in_picture[phrase].astype(np.float32)
            arrays[f"from_face_{n}"] = self.from_face.get(phrase, np.zeros((0, 4))).astype(np.float32)
        with path.open("wb") as handle:
            np.savez_compressed(
                handle,
                phrases=np.array(json.dumps(self.phrases)),
                train_ids=np.array(json.dumps(sorted(self.train_ids))),
                metadata=np.array(json.dumps(dict(self.metadata, version=self.version))),
                **arrays,
            )

    @classmethod
    def load(cls, path: Path) -> ContextPrior:
        if not path.is_file():
            raise ModelLoadError(f"context prior not found at {path}; fit one with `manage.py train_context`")
        try:
            with np.load(path, allow_pickle=False) as data:
                phrases = json.loads(str(data["phrases"]))
                meta = json.loads(str(data["metadata"]))
                meta.pop("version", None)
                return cls(
                    in_picture={p: data[f"in_picture_{n}"].astype(np.float64) for n, p in enumerate(phrases)},
                    from_face={p: data[f"from_face_{n}"].astype(np.float64) for n, p in enumerate(phrases)},
                    train_ids=list(json.loads(str(data["train_ids"]))),
                    metadata=meta,
                )
        except (KeyError, ValueError, OSError) as exc:
            raise ModelLoadError(f"{path} is not a context prior file: {exc}") from exc


def fit(
    pictures: Sequence[tuple[str, tuple[int, int], Sequence[tuple[Box, str]]]],
    phrases: Sequence[str],
    faces_of: Callable[[str], Sequence[Box]],
) -> ContextPrior:
    """The prior of ``phrases`` from ``pictures`` as (id, (width, height), [(box, phrase)]); ``faces_of``
    gives a picture's faces (relative xywh) by id, asked only for pictures with a box of a phrase."""
    wanted = set(phrases)
    in_frame: dict[str, list[np.ndarray]] = {p: [] for p in phrases}
    face_frame: dict[str, list[np.ndarray]] = {p: [] for p in phrases}
    used = []
    for picture_id, size, picture_boxes in pictures:
        mine = [(box, phrase) for box, phrase in picture_boxes if phrase in wanted]
        if not mine:
            continue
        used.append(picture_id)
        faces = list(faces_of(picture_id))
        for box, phrase in mine:
            in_frame[phrase].append(in_picture(np.asarray([box]), size)[0])
            if faces:
                face_frame[phrase].append(
                    from_face(np.asarray([box]), nearest_face(box, faces, size), size)[0]
                )
    return ContextPrior(
        in_picture={p: np.asarray(v).reshape(-1, 3) for p, v in in_frame.items() if v},
        from_face={p: np.asarray(v).reshape(-1, 4) for p, v in face_frame.items() if v},
        train_ids=sorted(used),
        metadata={"boxes": {p: len(v) for p, v in in_frame.items()}},
    )
