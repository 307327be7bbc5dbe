"""The projection head: EfficientNet features (1280-d) -> the MiniLM text space (384-d).

Trained by training.py on art-dev's labelled box crops: a label's score for a region is
``sigmoid(scale * cos(project(feature), embed(label phrase)) + bias)``. Stored as a small float16 .npz
with everything needed to use and audit it: the label phrases and their embeddings, which of them are
detector labels (the art vocabulary) rather than whole-picture subjects, scale, bias, the art-dev image
ids it was trained on (an evaluation must leave those out) and a version derived from the weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workers.inference.base import ModelLoadError

FEATURE_DIM = 1280
TEXT_DIM = 384
ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_HEAD = ASSETS / "head.npz"


@dataclass
class ProjectionHead:
    weight: np.ndarray  # (1280, 384)
    feature_mean: np.ndarray  # (1280,) features are centred and scaled before projection
    feature_scale: np.ndarray  # (1280,)
    phrases: list[str]  # label phrases, readable ("halo", "Virgin and Child")
    phrase_embeddings: np.ndarray  # (n_phrases, 384), L2-normalised MiniLM embeddings
    detector_labels: np.ndarray  # (n_phrases,) bool: phrases the detector may name a region with
    scale: float = 10.0
    bias: float = -3.0
    train_ids: list[str] = field(default_factory=list)
    metadata: dict[str, object] = field(default_factory=dict)

    _version: tuple[tuple[object, ...], str] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def detector_phrases(self) -> list[str]:
        """The phrases the detector may name a region with, in the head's order."""
        return [p for p, d in zip(self.phrases, self.detector_labels, strict=True) if d]

    @property
    def version(self) -> str:
        """A short digest of the weights: a retrained head is a new model version. Remembered (hashing the
        1 MB of weights took ~3 ms, and every search asks for the model key) until the weights, scale,
        bias or phrases change: a new array, or a change in a sample of its values."""
        sample = float(np.asarray(self.weight)[::97, ::13].sum())
        key = (id(self.weight), sample, self.scale, self.bias, tuple(self.phrases))
        if self._version is not None and self._version[0] == key:
            return self._version[1]
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.weight, dtype=np.float16).tobytes())
        digest.update(json.dumps([self.phrases, round(self.scale, 4), round(self.bias, 4)]).encode())
        self._version = (key, digest.hexdigest()[:12])
        return self._version[1]

    def project(self, features: np.ndarray) -> np.ndarray:
        """(n, 1280) features -> (n, 384) L2-normalised vectors in the text space."""
        features = np.atleast_2d(np.asarray(features, dtype=np.float32))
        z = ((features - self.feature_mean) / self.feature_scale) @ self.weight.astype(np.float32)
        return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)

    def label_scores(self, projected: np.ndarray) -> np.ndarray:
        """(n, 384) projected vectors -> (n, n_phrases) probabilities that each phrase is present."""
        logits = self.scale * (projected @ self.phrase_embeddings.T) + self.bias
        return 1.0 / (1.0 + np.exp(-logits))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = dict(self.metadata, version=self.version, scale=self.scale, bias=self.bias)
        with path.open("wb") as handle:
            np.savez_compressed(
                handle,
                weight=self.weight.astype(np.float16),
                feature_mean=self.feature_mean.astype(np.float32),
                feature_scale=self.feature_scale.astype(np.float32),
                phrase_embeddings=self.phrase_embeddings.astype(np.float16),
                detector_labels=self.detector_labels.astype(bool),
                phrases=np.array(json.dumps(self.phrases)),
                train_ids=np.array(json.dumps(sorted(self.train_ids))),
                metadata=np.array(json.dumps(meta)),
            )

    @classmethod
    def load(cls, path: Path) -> ProjectionHead:
        if not path.is_file():
            raise ModelLoadError(
                f"projection head not found at {path}; train one with `manage.py train_head`"
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["metadata"]))
                embeddings = data["phrase_embeddings"].astype(np.float32)
                return cls(
                    weight=data["weight"].astype(np.float32),
                    feature_mean=data["feature_mean"].astype(np.float32),
                    feature_scale=data["feature_scale"].astype(np.float32),
                    phrases=list(json.loads(str(data["phrases"]))),
                    # float16 storage loses a little norm; scores assume unit vectors.
                    phrase_embeddings=embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True),
                    detector_labels=data["detector_labels"].astype(bool),
                    scale=float(meta.pop("scale")),
                    bias=float(meta.pop("bias")),
                    train_ids=list(json.loads(str(data["train_ids"]))),
                    metadata=meta,
                )
        except (KeyError, ValueError, OSError) as exc:
            raise ModelLoadError(f"{path} is not a projection head file: {exc}") from exc
