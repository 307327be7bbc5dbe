"""Query text -> vector of the active embedder, cached by (model key, text).

Where encoding runs (docs/architecture.md, "Search"): the web process never loads a model. A cache miss
sends a small task to the ``rerank`` queue, whose workers keep the embedder loaded; the vector comes back
through the cache. Workers and management commands (the evaluation) encode in their own process.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
from django.core.cache import cache

from search_app import request_control

logger = logging.getLogger(__name__)

CACHE_TTL_S = 7 * 24 * 3600


def embedder_model_key() -> str:
    """The active embedder's model key. Constructing a backend is cheap and loads no network (a version
    may be derived from small weights files, as the offline head's digest is)."""
    from workers.inference.registry import get_embedder

    return get_embedder().model_key


def _cache_key(model_key: str, text: str) -> str:
    digest = hashlib.sha256(f"{model_key}\0{' '.join(text.split())}".encode()).hexdigest()
    return f"semart:qvec:{digest}"


def cached_text_vector(text: str, *, model_key: str) -> np.ndarray | None:
    raw = cache.get(_cache_key(model_key, text))
    return None if raw is None else np.frombuffer(raw, dtype=np.float32).copy()


def remember_text_vector(text: str, vector: np.ndarray, *, model_key: str) -> None:
    cache.set(_cache_key(model_key, text), np.asarray(vector, dtype=np.float32).tobytes(), CACHE_TTL_S)


def encode_text_here(text: str) -> tuple[np.ndarray, str]:
    """Encode in this process (a worker or a command): (vector, model_key)."""
    from workers.inference.registry import get_embedder

    embedder = get_embedder()
    model_key = embedder.model_key
    vector = cached_text_vector(text, model_key=model_key)
    if vector is None:
        vector = embedder.embed_texts([text])[0]
        remember_text_vector(text, vector, model_key=model_key)
    return vector, model_key


async def encode_text_remote(text: str, *, search_id: str, timeout_s: float) -> np.ndarray | None:
    """Encode through the rerank queue, for the web process. None when no worker answered in time."""
    from workers.search_tasks import RERANK_QUEUE, search_encode_query

    model_key = embedder_model_key()
    raw = await cache.aget(_cache_key(model_key, text))
    if raw is not None:
        return np.frombuffer(raw, dtype=np.float32).copy()
    mailbox = request_control.task_ids(search_id)[0]
    search_encode_query.apply_async(
        kwargs={"text": text, "mailbox": mailbox}, task_id=mailbox, queue=RERANK_QUEUE, expires=timeout_s
    )
    answer = await request_control.wait_result(mailbox, timeout_s=timeout_s)
    if not answer or not answer.get("ok"):
        if answer:
            logger.warning("query encoding failed: %s", answer.get("error"))
        return None
    if answer.get("model_key") != model_key:
        logger.warning("worker encodes with %s, web expects %s", answer.get("model_key"), model_key)
        return None
    return cached_text_vector(text, model_key=model_key)
