"""OfflineEmbedder: MiniLM for text, EfficientNet-lite3 + the learned projection head for pictures.

Texts and pictures meet in MiniLM's 384-d space. Regions are described by pooling the picture's dense
feature grid inside each box (one set of network runs per picture, however many boxes). The version is
the head's digest, so a retrained head changes ``model_key`` and stored vectors are re-made, not mixed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workers.inference.base import Box, Embedder
from workers.inference.offline.effnet import get_effnet
from workers.inference.offline.head import DEFAULT_HEAD, ProjectionHead
from workers.inference.offline.text import DIM, get_encoder

if TYPE_CHECKING:
    from PIL.Image import Image

LOCAL_HEAD_NAME = "offline-head.npz"


def head_path(model_dir: Path | None, options: dict[str, Any]) -> Path:
    """An explicit ``head_path`` option, else a head trained here (``<model_dir>/offline-head.npz``,
    where ``train_head --install`` writes it), else the head shipped with the code."""
    if options.get("head_path"):
        return Path(options["head_path"])
    if model_dir is not None and (model_dir / LOCAL_HEAD_NAME).is_file():
        return model_dir / LOCAL_HEAD_NAME
    return DEFAULT_HEAD


class OfflineEmbedder(Embedder):
    key = "offline-minilm-effnet"
    dim = DIM

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._head: ProjectionHead | None = None

    @property
    def head(self) -> ProjectionHead:
        # Loading the head is a few ms of numpy; the networks stay lazy until load().
        if self._head is None:
            self._head = ProjectionHead.load(head_path(self.model_dir, self.options))
        return self._head

    @property
    def version(self) -> str:  # type: ignore[override]
        return f"head-{self.head.version}"

    def _load(self) -> None:
        _ = self.head
        get_encoder().load()
        get_effnet().load()

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        return get_encoder().encode(texts)

    def _embed_images(self, images: list[Image]) -> np.ndarray:
        features = np.stack([get_effnet().features(image)[0] for image in images])
        return self.head.project(features)

    def _embed_regions(self, image: Image, boxes: list[Box]) -> np.ndarray:
        return self.head.project(self.region_features(image, boxes))

    def region_features(self, image: Image, boxes: list[Box]) -> np.ndarray:
        """(n, 1280) pooled EfficientNet features of boxes of one picture."""
        self.load()
        grid = get_effnet().dense_grid_cached(image)
        return np.stack([grid.pool(box) for box in boxes])

    def label_scores(self, vectors: np.ndarray) -> np.ndarray:
        """Probabilities of the head's label phrases for embedded pictures or regions: (n, n_phrases)."""
        return self.head.label_scores(np.atleast_2d(vectors))
