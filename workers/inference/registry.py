"""Which backend serves each role, by key. Backends are imported only when chosen, so the web process
and the offline default never import torch.

Add a backend: implement the role's class from base.py, then add its key and dotted path here.
"""

from __future__ import annotations

import functools
from importlib import import_module
from typing import Any, TypeVar

from django.conf import settings

from workers.inference.base import Captioner, Detector, Embedder, Model, Reranker

M = TypeVar("M", bound=Model)

BACKENDS: dict[str, dict[str, str]] = {
    "embedder": {
        "offline-minilm-effnet": "workers.inference.offline.embedder.OfflineEmbedder",
        "clip": "workers.inference.production.clip.ClipEmbedder",
        "siglip": "workers.inference.production.clip.SiglipEmbedder",
        "qwen3-vl-embedding": "workers.inference.production.qwen3vl.Qwen3VLEmbedder",
    },
    "detector": {
        "offline-ssd-windows": "workers.inference.offline.detector.OfflineDetector",
        "sam": "workers.inference.production.sam.SamDetector",
        "owlv2": "workers.inference.production.owl.Owlv2Detector",
    },
    "captioner": {
        "composed": "workers.inference.captions.ComposedCaptioner",
        "blip": "workers.inference.production.blip.BlipCaptioner",
    },
    "reranker": {
        "offline-details": "workers.inference.offline.reranker.OfflineReranker",
        "qwen3-vl-reranker": "workers.inference.production.qwen3vl.Qwen3VLReranker",
    },
}
# The roles are abstract classes, only used with issubclass (mypy wants concrete ones in type[...]).
ROLE_CLASSES: dict[str, type[Model]] = {
    "embedder": Embedder,  # type: ignore[type-abstract]
    "detector": Detector,  # type: ignore[type-abstract]
    "captioner": Captioner,  # type: ignore[type-abstract]
    "reranker": Reranker,  # type: ignore[type-abstract]
}


def backend_class(role: str, key: str) -> type[Model]:
    try:
        dotted = BACKENDS[role][key]
    except KeyError:
        raise ValueError(
            f"no {role} backend {key!r}; choose one of {sorted(BACKENDS.get(role, {}))}"
        ) from None
    module, _, name = dotted.rpartition(".")
    cls = getattr(import_module(module), name)
    if not issubclass(cls, ROLE_CLASSES[role]):
        raise TypeError(f"{dotted} is not a {ROLE_CLASSES[role].__name__}")
    return cls


@functools.cache
def get_model(role: str, key: str | None = None) -> Any:
    """The process-wide instance for a role (lazy: weights load on first use)."""
    key = key or settings.SEMART_MODELS[role]
    cls = backend_class(role, key)
    return cls(device=settings.SEMART_DEVICE, model_dir=settings.SEMART_MODEL_DIR)


def get_embedder() -> Embedder:
    return get_model("embedder")  # type: ignore[no-any-return]


def get_detector() -> Detector:
    return get_model("detector")  # type: ignore[no-any-return]


def get_captioner() -> Captioner:
    return get_model("captioner")  # type: ignore[no-any-return]


def get_reranker() -> Reranker:
    return get_model("reranker")  # type: ignore[no-any-return]
