"""Naming the regions a detector finds without names (SAM's masks are "region"): the active embedder compares
each region with the phrases of a vocabulary and gives it the nearest one.

Without names, a production detector's details could not be found by the word legs (labels are indexed),
captioned from their label, grouped by what they are, or chosen as the region a query names
(``search_app.reranking.route_label``). The vocabulary is ``workers.inference.vocabulary.region_labels()``
(``settings.SEMART_REGION_LABELS``, else the art vocabulary). Each phrase is embedded once per embedder
version, as "a painting of a halo"; a region takes the phrase with the highest cosine, and its confidence
becomes the detector's times the phrase's softmax probability over the vocabulary (cosines times
``SCALE``, CLIP's logit scale), so that among the details with one label the best named comes first. The
top three phrases and their probabilities are kept in the region's attributes.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from workers.inference.base import Embedder, Region
from workers.inference.vocabulary import prompt

if TYPE_CHECKING:
    from PIL.Image import Image

SCALE = 100.0

_cache: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}
_cache_lock = threading.Lock()


def naming_version(embedder: Embedder, labels: Sequence[str]) -> str:
    """Changes with the embedder's version and the vocabulary: part of the entities step's version, so
    either change names the regions again."""
    return hashlib.sha256(json.dumps([embedder.model_key, list(labels)]).encode()).hexdigest()[:10]


def label_vectors(embedder: Embedder, labels: Sequence[str]) -> np.ndarray:
    """The vocabulary's (n, dim) text vectors, embedded once per embedder version and vocabulary."""
    key = (embedder.model_key, tuple(labels))
    with _cache_lock:
        hit = _cache.get(key)
    if hit is None:
        hit = embedder.embed_texts([prompt(label) for label in labels])
        with _cache_lock:
            _cache[key] = hit
    return hit


def name_regions(
    image: Image, regions: Sequence[Region], embedder: Embedder, labels: Sequence[str]
) -> list[Region]:
    """The regions with a label from ``labels`` each (new Region objects; the input is left as it was)."""
    if not regions:
        return []
    if not labels:
        raise ValueError("no labels to name regions with (SEMART_REGION_LABELS is empty of words)")
    vectors = embedder.embed_regions(image.convert("RGB"), [r.box for r in regions])
    logits = SCALE * (vectors @ label_vectors(embedder, labels).T)
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    named = []
    for region, row in zip(regions, probabilities, strict=True):
        top = np.argsort(-row)[:3]
        nearest = {labels[int(j)]: round(float(row[j]), 3) for j in top}
        named.append(
            replace(
                region,
                label=labels[int(top[0])],
                confidence=float(region.confidence) * float(row[top[0]]),
                attributes={**region.attributes, "named": nearest},
            )
        )
    return named
