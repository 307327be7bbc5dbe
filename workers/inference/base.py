"""The interface every model backend implements, one abstract class per role.

Shape (after immich's machine-learning models): construction is cheap; ``load()`` is lazy and idempotent
and runs on first use; the public method pre-processes, calls ``_predict`` on the model core, then
post-processes, so batching and devices change in one place. A backend's ``key`` picks it in settings and
``version`` changes whenever its weights change: stored outputs carry ``model_key`` built from both, so a new
version re-embeds instead of mixing vectors.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL.Image import Image

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]  # x, y, w, h relative to the image, 0..1


class ModelLoadError(RuntimeError):
    """A backend could not load its weights (missing package, file or device). Not transient."""


def choose_device(preference: str = "auto") -> str:
    """'cuda' when asked for or when auto finds a GPU through torch, else 'cpu'. Never imports torch
    unless a torch backend is in use (the caller passes 'cpu' otherwise)."""
    if preference == "cpu":
        return "cpu"
    try:
        import torch
    except ImportError:
        if preference == "cuda":
            logger.warning("SEMART_DEVICE=cuda but torch is not installed; using the CPU")
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if preference == "cuda":
        logger.warning("SEMART_DEVICE=cuda but no GPU is visible; using the CPU")
    return "cpu"


class Model(ABC):
    key: str = ""
    version: str = "1"

    def __init__(self, *, device: str = "auto", model_dir: Path | None = None, **options: Any) -> None:
        self.device_preference = device
        self.model_dir = model_dir
        self.options = options
        self._loaded = False
        self._lock = threading.Lock()

    @property
    def model_key(self) -> str:
        """What stored outputs are tagged with: backend and weights version."""
        return f"{self.key}@{self.version}"

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if not self._loaded:
                self._load()
                self._loaded = True

    @abstractmethod
    def _load(self) -> None: ...


@dataclass
class Region:
    """A region a detector found: relative box, label, confidence, optional mask outline and angle."""

    box: Box
    label: str
    confidence: float
    polygon: list[list[float]] | None = None
    angle: float = 0.0
    source: str = ""  # which part of the detector proposed it (e.g. "ssd", "face", "window")
    attributes: dict[str, Any] = field(default_factory=dict)


class Embedder(Model):
    """Images and text in one space. Every output row is L2-normalised float32."""

    dim: int = 0

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalise(self._embed_texts(list(texts)))

    def embed_images(self, images: Sequence[Image]) -> np.ndarray:
        self.load()
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalise(self._embed_images(list(images)))

    def embed_regions(self, image: Image, boxes: Sequence[Box]) -> np.ndarray:
        """Embeddings of regions of one image. The default crops; a backend may pool a feature map."""
        self.load()
        if not boxes:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalise(self._embed_regions(image, list(boxes)))

    def _embed_regions(self, image: Image, boxes: list[Box]) -> np.ndarray:
        return self._embed_images([crop(image, b) for b in boxes])

    @abstractmethod
    def _embed_texts(self, texts: list[str]) -> np.ndarray: ...

    @abstractmethod
    def _embed_images(self, images: list[Image]) -> np.ndarray: ...


def image_key(image: Image) -> str:
    """A key for a picture's content and size, for caches of what a model computed from it."""
    import hashlib

    return hashlib.blake2b(image.convert("RGB").tobytes(), digest_size=16).hexdigest() + f"{image.size}"


# The label of a region its detector found without naming it (SAM): the entities stage names it from the
# embedder (workers/pipeline/naming.py).
UNLABELLED = "region"


class Detector(Model):
    """Finds entity regions in an image. A detector whose regions come out ``UNLABELLED`` sets
    ``names_regions`` False, and the pipeline names them."""

    names_regions = True

    def detect(self, image: Image) -> list[Region]:
        self.load()
        return self._detect(image)

    @abstractmethod
    def _detect(self, image: Image) -> list[Region]: ...

    def place(self, image: Image, found: Sequence[Region] = ()) -> list[Region]:
        """Where to show each thing found, one region a label, when it is not simply one of the detected
        regions (a detector may place better than it searches): stored as Placements, shown, never
        searched. ``found`` is what ``detect`` returned for the same picture, for a detector that places
        from it. Empty unless the detector has such a model."""
        self.load()
        return self._place(image, found)

    def _place(self, image: Image, found: Sequence[Region]) -> list[Region]:
        return []


@dataclass
class CaptionRequest:
    box: Box
    label: str
    level: str
    context: str = ""  # a sentence composed from labels and relations, for backends that cannot see


class Captioner(Model):
    def caption(self, image: Image, requests: Sequence[CaptionRequest]) -> list[str]:
        self.load()
        if not requests:
            return []
        return self._caption(image, list(requests))

    @abstractmethod
    def _caption(self, image: Image, requests: list[CaptionRequest]) -> list[str]: ...


@dataclass
class RerankCandidate:
    """One search candidate as the reranker sees it."""

    id: str
    text: str  # title, description, labels, captions, ICONCLASS texts
    image_path: str | None = None
    region_vectors: np.ndarray | None = (
        None  # (n, dim) vectors of the candidate's details, same space as the query
    )
    region_texts: list[str] = field(default_factory=list)
    first_stage_score: float = 0.0
    evidence: dict[str, float] = field(default_factory=dict)  # e.g. lexical / ICONCLASS leg scores


class StopRequested(Exception):
    """The request that wanted this work has gone; stop between batches."""


class Reranker(Model):
    batch_size: int = 8

    def score(
        self,
        query: str,
        candidates: Sequence[RerankCandidate],
        *,
        query_vector: np.ndarray | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[float]:
        """Scores in [0, 1], one per candidate. ``should_stop`` is checked before every batch; when it
        answers true, :class:`StopRequested` is raised and the worker is free."""
        self.load()
        scores: list[float] = []
        for start in range(0, len(candidates), self.batch_size):
            if should_stop():
                raise StopRequested()
            batch = list(candidates[start : start + self.batch_size])
            scores.extend(self._score(query, batch, query_vector=query_vector))
            if on_batch:
                on_batch(start // self.batch_size)
        return scores

    @abstractmethod
    def _score(
        self, query: str, batch: list[RerankCandidate], *, query_vector: np.ndarray | None
    ) -> list[float]: ...


def crop(image: Image, box: Box) -> Image:
    x, y, w, h = box
    width, height = image.size
    left, top = int(round(x * width)), int(round(y * height))
    right, bottom = max(left + 1, int(round((x + w) * width))), max(top + 1, int(round((y + h) * height)))
    return image.crop((left, top, min(right, width), min(bottom, height)))


def _normalise(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)
