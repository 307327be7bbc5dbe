"""Test doubles for the search tests. Each stands in for a model only where the test is about something
else (retrieval SQL, the task plumbing, cancellation), and says so in its name."""

from __future__ import annotations

import time

import numpy as np
import redis
from django.conf import settings

from workers.inference.base import Embedder, RerankCandidate, Reranker


class FakeTableEmbedder(Embedder):
    """Text -> a vector the test chose (FakeTableEmbedder.table), so retrieval tests control geometry."""

    key = "fake-table"
    version = "1"
    dim = 8
    table: dict[str, np.ndarray] = {}

    def _load(self) -> None:
        return None

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.table[t] for t in texts])

    def _embed_images(self, images):  # type: ignore[no-untyped-def]
        raise NotImplementedError("FakeTableEmbedder embeds only texts")


BATCH_COUNTER_KEY = "test:fake-slow-reranker:batches"


class FakeSlowReranker(Reranker):
    """Sleeps per batch and counts the batches it scored in Redis (per query text), so a test can see when
    work stops."""

    key = "fake-slow"
    version = "1"
    batch_size = 1
    seconds_per_batch = 0.3

    def _load(self) -> None:
        return None

    def _score(
        self, query: str, batch: list[RerankCandidate], *, query_vector: np.ndarray | None
    ) -> list[float]:
        time.sleep(self.seconds_per_batch)
        redis.Redis.from_url(settings.REDIS_URL).incr(f"{BATCH_COUNTER_KEY}:{query}")
        return [0.5 for _ in batch]
