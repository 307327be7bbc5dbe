"""Test doubles for the model roles, for tests about something else (retries, recovery, bad input), where the
models' output does not matter and their load time would only slow the test down. The pipeline's end-to-end
tests use the real offline models instead."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest

from workers.inference.base import (
    UNLABELLED,
    Captioner,
    CaptionRequest,
    Detector,
    Embedder,
    ModelLoadError,
    Region,
)

DIM = 16


def _vector(seed: str) -> np.ndarray:
    digest = hashlib.sha256(seed.encode()).digest()
    return np.frombuffer(digest[:DIM], dtype=np.uint8).astype(np.float32) + 1.0


class FakeHashEmbedder(Embedder):
    """Vectors from a hash of the input: deterministic, meaningless."""

    key = "fake-hash-embedder"
    dim = DIM

    def _load(self) -> None:
        pass

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        return np.stack([_vector(t) for t in texts])

    def _embed_images(self, images: list[Any]) -> np.ndarray:
        return np.stack([_vector(str(image.size) + str(image.getpixel((0, 0)))) for image in images])


class FakeFixedDetector(Detector):
    """The same three regions in every picture: a figure holding a book, and a dove apart."""

    key = "fake-fixed-detector"

    def _load(self) -> None:
        pass

    def _detect(self, image: Any) -> list[Region]:
        return [
            Region(box=(0.1, 0.2, 0.35, 0.7), label="person", confidence=0.9),
            Region(box=(0.35, 0.45, 0.12, 0.12), label="book", confidence=0.7),
            Region(box=(0.75, 0.05, 0.15, 0.12), label="dove", confidence=0.6),
        ]


class FakeUnnamedBoxesDetector(Detector):
    """Regions at the boxes it is given, unnamed, as SAM's come out: for tests of the naming, where what a
    real SAM finds (random weights here) does not matter."""

    key = "fake-unnamed-boxes-detector"
    names_regions = False

    def __init__(self, boxes: list[tuple[float, float, float, float]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.boxes = boxes

    def _load(self) -> None:
        pass

    def _detect(self, image: Any) -> list[Region]:
        return [Region(box=box, label=UNLABELLED, confidence=0.9, source="sam") for box in self.boxes]


class FakeContextCaptioner(Captioner):
    key = "fake-context-captioner"

    def _load(self) -> None:
        pass

    def _caption(self, image: Any, requests: list[CaptionRequest]) -> list[str]:
        return [r.context for r in requests]


FAKES = {"embedder": FakeHashEmbedder, "detector": FakeFixedDetector, "captioner": FakeContextCaptioner}


@pytest.fixture(name="fake_models")
def fake_models_fixture(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Every model role answered by a fake, for the duration of one test."""
    instances = {role: cls() for role, cls in FAKES.items()}
    monkeypatch.setattr("workers.inference.registry.get_model", lambda role, key=None: instances[role])
    return instances


class FakeUnloadableDetector(FakeFixedDetector):
    """A detector whose weights are missing: what a broken deployment looks like to the pipeline."""

    key = "fake-unloadable-detector"

    def _load(self) -> None:
        raise ModelLoadError("weights file missing: /nowhere/detector.onnx")
