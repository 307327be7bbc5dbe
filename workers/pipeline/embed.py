"""Stage 2: the whole-image embedding with the active embedder, and the vector indexes it needs."""

from __future__ import annotations

import logging

from django.db import DatabaseError, transaction

from collections_app.models import ArtworkEmbedding, EmbeddingKind, Stage
from collections_app.vector_indexes import ensure_hnsw_index
from workers.inference.registry import get_embedder
from workers.pipeline.state import artwork_lock, step_version, working_image_open

logger = logging.getLogger(__name__)

_ensured: set[tuple[str, str, str, int]] = set()


def vector_index_ensure(*, target: str, model_key: str, kind: str, dim: int) -> None:
    """Create the partial HNSW index the first time a model stores vectors (once per process)."""
    key = (target, model_key, kind, dim)
    if key in _ensured:
        return
    try:
        # Its own transaction, outside the stage's: CREATE INDEX locks the table against writes while it
        # builds.
        with transaction.atomic():
            ensure_hnsw_index(target=target, model_key=model_key, kind=kind, dim=dim)
    except DatabaseError:
        # Two workers creating the same index wait for each other (ensure_hnsw_index); anything else that
        # fails here leaves the vectors stored and searchable by exact scan: `manage.py vector_indexes`
        # creates what is missing.
        logger.warning("could not create the HNSW index for %s", key, exc_info=True)
        return
    _ensured.add(key)


def stage_embed(*, artwork_id: int, force: bool = False) -> str:
    """Embed the working image. Vectors of other models stay, tagged with their own model_key."""
    embedder = get_embedder()
    key = embedder.model_key
    with transaction.atomic():
        artwork = artwork_lock(artwork_id)
        current = ArtworkEmbedding.objects.filter(
            artwork_id=artwork_id, model_key=key, kind=EmbeddingKind.IMAGE
        )
        if not force and current.exists() and step_version(artwork_id, Stage.EMBED) == key:
            return key
        vector = embedder.embed_images([working_image_open(artwork)])[0]
        current.delete()
        ArtworkEmbedding.objects.create(
            artwork_id=artwork_id,
            model_key=key,
            kind=EmbeddingKind.IMAGE,
            dim=int(vector.shape[0]),
            vector=vector,
        )
    vector_index_ensure(target="artwork", model_key=key, kind=EmbeddingKind.IMAGE, dim=int(vector.shape[0]))
    return key
