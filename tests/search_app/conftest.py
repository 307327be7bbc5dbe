"""Fixtures for search tests: vectors inserted straight into the catalogue's embedding tables."""

from __future__ import annotations

import numpy as np
import pytest

from collections_app.models import ArtworkEmbedding, DetailEmbedding
from workers.inference import registry

MODEL_KEY = "fake-table@1"


def unit(vector: list[float] | np.ndarray) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32)
    return v / np.linalg.norm(v)


def embed_artwork(artwork, vector, *, model_key: str = MODEL_KEY) -> ArtworkEmbedding:  # type: ignore[no-untyped-def]
    v = unit(vector)
    return ArtworkEmbedding.objects.create(
        artwork=artwork, model_key=model_key, kind="image", dim=v.size, vector=v
    )


def embed_detail(detail, vector, *, kind: str = "image", model_key: str = MODEL_KEY) -> DetailEmbedding:  # type: ignore[no-untyped-def]
    v = unit(vector)
    return DetailEmbedding.objects.create(
        detail=detail,
        artwork=detail.artwork,
        level=detail.level,
        model_key=model_key,
        kind=kind,
        dim=v.size,
        vector=v,
    )


@pytest.fixture
def fake_models(settings, monkeypatch):  # type: ignore[no-untyped-def]
    """Selects the test-double embedder (and lets a test pick a reranker) through the real registry."""
    from tests.search_app.doubles import FakeTableEmbedder

    monkeypatch.setitem(
        registry.BACKENDS["embedder"], "fake-table", "tests.search_app.doubles.FakeTableEmbedder"
    )
    monkeypatch.setitem(
        registry.BACKENDS["reranker"], "fake-slow", "tests.search_app.doubles.FakeSlowReranker"
    )
    settings.SEMART_MODELS = {**settings.SEMART_MODELS, "embedder": "fake-table"}
    monkeypatch.setattr(FakeTableEmbedder, "table", {})
    registry.get_model.cache_clear()
    yield FakeTableEmbedder
    registry.get_model.cache_clear()


@pytest.fixture
def clean_cache(redis_client):  # type: ignore[no-untyped-def]
    """An empty test Redis (cache, flags, mailboxes): no cached vector or ranking leaks between tests."""
    from django.core.cache import cache

    cache.clear()
    yield redis_client
