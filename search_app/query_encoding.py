"""Query text -> vector of the active embedder, cached by (model key, text).

Where encoding runs (docs/architecture.md, "Search"): the web process never loads a model. A cache miss
sends a small task to the ``rerank`` queue, whose workers keep the embedder loaded; the vector comes back
through the cache. Workers and management commands (the evaluation) encode in their own process.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

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
    from workers.search_tasks import search_encode_query

    model_key = embedder_model_key()
    key = _cache_key(model_key, text)
    raw = await cache.aget(key)
    if raw is not None:
        return np.frombuffer(raw, dtype=np.float32).copy()
    return await _encode_on_worker(
        search_encode_query, {"text": text}, vector_key=key, model_key=model_key, search_id=search_id,
        timeout_s=timeout_s, what="query",
    )  # fmt: skip


async def _encode_on_worker(
    task: Any,
    kwargs: dict[str, Any],
    *,
    vector_key: str,
    model_key: str,
    search_id: str,
    timeout_s: float,
    what: str,
) -> np.ndarray | None:
    """Sends an encode task to the rerank queue and reads the vector it cached under ``vector_key``. None
    when no worker answered in time, it failed, or it encodes with another model than the web expects;
    QueryImageMissing when the worker found no stashed picture."""
    from workers.search_tasks import RERANK_QUEUE

    mailbox = request_control.task_ids(search_id)[0]
    task.apply_async(
        kwargs={**kwargs, "mailbox": mailbox}, task_id=mailbox, queue=RERANK_QUEUE, expires=timeout_s
    )
    answer = await request_control.wait_result(mailbox, timeout_s=timeout_s)
    if not answer or not answer.get("ok"):
        if answer and answer.get("missing"):
            raise QueryImageMissing(str(kwargs.get("digest", "")))
        if answer:
            logger.warning("%s encoding failed: %s", what, answer.get("error"))
        return None
    if answer.get("model_key") != model_key:
        logger.warning("worker encodes with %s, web expects %s", answer.get("model_key"), model_key)
        return None
    raw = await cache.aget(vector_key)
    return None if raw is None else np.frombuffer(raw, dtype=np.float32).copy()


# -- searching by an uploaded picture ------------------------------------------------------------------
#
# Tasks never carry pictures. The web process validates the upload, shrinks it to the working size and keeps
# that JPEG in the cache under its digest; the digest is what travels (in the page's shareable URL too). A
# worker on the rerank queue reads it from there, embeds it with the image encoder and caches the vector by
# (model key, digest), so paging and reranking reuse it.

QUERY_IMAGE_TTL_S = 24 * 3600
QUERY_IMAGE_LONG_SIDE = 768
# Decoded in the web process: a tighter pixel limit than the workers' (an RGB 50 MP picture is ~150 MB).
QUERY_IMAGE_MAX_PIXELS = 50_000_000


class QueryImageMissing(LookupError):
    """The picture of this digest is no longer (or never was) in the cache: upload it again."""


def _image_key(digest: str) -> str:
    return f"semart:qimg:{digest}"


def _image_vector_key(model_key: str, digest: str) -> str:
    raw = f"{model_key}\0{digest}".encode()
    return f"semart:qimgvec:{hashlib.sha256(raw).hexdigest()}"


def stash_query_image(data: bytes) -> str:
    """Validate an uploaded picture (raises workers.imaging.ImageRejected with the reason), keep its
    working-size JPEG in the cache, and return its digest (hex sha256 of that JPEG)."""
    from django.conf import settings

    from workers.imaging import image_normalise, image_to_jpeg

    normalised = image_normalise(
        data,
        max_pixels=min(settings.SEMART_FETCH["max_pixels"], QUERY_IMAGE_MAX_PIXELS),
        working_long_side=QUERY_IMAGE_LONG_SIDE,
    )
    jpeg = image_to_jpeg(normalised.working)
    digest = hashlib.sha256(jpeg).hexdigest()
    cache.set(_image_key(digest), jpeg, QUERY_IMAGE_TTL_S)
    return digest


def query_image_known(digest: str) -> bool:
    return cache.has_key(_image_key(digest))


def cached_image_vector(digest: str, *, model_key: str) -> np.ndarray | None:
    raw = cache.get(_image_vector_key(model_key, digest))
    return None if raw is None else np.frombuffer(raw, dtype=np.float32).copy()


def encode_image_here(digest: str) -> tuple[np.ndarray, str]:
    """Embed the stashed picture in this process (a worker or a command): (vector, model_key).
    Raises QueryImageMissing when the picture has left the cache."""
    import io

    from PIL import Image

    from workers.inference.registry import get_embedder

    embedder = get_embedder()
    model_key = embedder.model_key
    vector = cached_image_vector(digest, model_key=model_key)
    if vector is None:
        jpeg = cache.get(_image_key(digest))
        if jpeg is None:
            raise QueryImageMissing(digest)
        with Image.open(io.BytesIO(jpeg)) as image:
            vector = embedder.embed_images([image.convert("RGB")])[0]
        cache.set(
            _image_vector_key(model_key, digest), np.asarray(vector, dtype=np.float32).tobytes(), CACHE_TTL_S
        )
    return vector, model_key


async def encode_image_remote(digest: str, *, search_id: str, timeout_s: float) -> np.ndarray | None:
    """Embed the stashed picture through the rerank queue, for the web process. None when no worker
    answered in time; QueryImageMissing when the picture is gone."""
    from workers.search_tasks import search_encode_image

    model_key = embedder_model_key()
    key = _image_vector_key(model_key, digest)
    raw = await cache.aget(key)
    if raw is not None:
        return np.frombuffer(raw, dtype=np.float32).copy()
    if not await cache.ahas_key(_image_key(digest)):
        raise QueryImageMissing(digest)
    return await _encode_on_worker(
        search_encode_image, {"digest": digest}, vector_key=key, model_key=model_key, search_id=search_id,
        timeout_s=timeout_s, what="query image",
    )  # fmt: skip
