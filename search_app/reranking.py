"""The second stage, as run by a worker of the ``rerank`` queue (or in process by the evaluation command).

It gathers what the reranker needs for each candidate (texts, the vectors of its whole image and of its
details), scores in batches while checking the request's stop flag, and picks the best region.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import psycopg
from django.db import connection
from django.db.models import QuerySet

from collections_app.models import Artwork, ArtworkEmbedding, Detail, DetailEmbedding
from search_app.iconclass_expansion import notation_text
from search_app.retrieval import detail_levels
from workers.inference.base import RerankCandidate, Reranker

logger = logging.getLogger(__name__)


def _vectors(rows: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack(rows).astype(np.float32, copy=False)


def _halfvec_rows(queryset: QuerySet[Any], *fields: str) -> list[tuple[Any, ...]]:
    """``values_list(*fields, "vector")`` of an embedding queryset, the vector read in PostgreSQL's binary
    format. The ORM reads halfvec as text and parses it in Python: 80% of a rerank's time at 64 candidates
    (~2,000 vectors, ~0.8 s), against a few milliseconds this way."""
    sql, params = queryset.values_list(*fields, "vector").query.sql_with_params()
    connection.ensure_connection()
    # Django's cursors bind on the client, which has no binary results; a plain psycopg cursor has them.
    with psycopg.Cursor(connection.connection) as cursor:
        # prepare=False: no server-side prepared statement, which a transaction pooler would break.
        cursor.execute(sql, params, binary=True, prepare=False)
        rows = cursor.fetchall()
    # halfvec's binary form: int16 dim, int16 unused, then dim IEEE half floats, big-endian.
    return [(*row[:-1], np.frombuffer(row[-1], dtype=">f2", offset=4).astype(np.float32)) for row in rows]


def build_rerank_candidates(
    *, candidates: Sequence[dict[str, Any]], model_key: str, level: str
) -> tuple[list[RerankCandidate], dict[str, list[int | None]]]:
    """RerankCandidates for the given ``[{"artwork_id", "first_stage", "legs"}]``, and for each candidate
    the detail id behind every row of its ``region_vectors`` (None for the whole image)."""
    ids = [int(c["artwork_id"]) for c in candidates]
    artworks = {a.pk: a for a in Artwork.objects.filter(pk__in=ids).prefetch_related("artists")}
    levels = list(detail_levels(level))
    details: dict[int, list[Detail]] = defaultdict(list)
    for d in (
        Detail.objects.visible()
        .filter(artwork_id__in=ids, level__in=levels)
        .only("id", "artwork_id", "label", "caption")
        .order_by("artwork_id", "id")
    ):
        details[d.artwork_id].append(d)
    region_rows: dict[int, list[tuple[int | None, np.ndarray]]] = defaultdict(list)
    if level == "artworks":
        whole = ArtworkEmbedding.objects.filter(artwork_id__in=ids, model_key=model_key, kind="image")
        for artwork_id, vector in _halfvec_rows(whole, "artwork_id"):
            region_rows[artwork_id].append((None, vector))
    regions = DetailEmbedding.objects.filter(
        artwork_id__in=ids, model_key=model_key, level__in=levels
    ).exclude(detail__review_state="hidden")
    for artwork_id, detail_id, vector in _halfvec_rows(regions, "artwork_id", "detail_id"):
        region_rows[artwork_id].append((detail_id, vector))

    out: list[RerankCandidate] = []
    region_ids: dict[str, list[int | None]] = {}
    for cand in candidates:
        artwork = artworks.get(int(cand["artwork_id"]))
        if artwork is None:  # deleted since the first stage
            continue
        own = details.get(artwork.pk, [])
        texts = [artwork.title, artwork.artist_names, artwork.description]
        texts += [notation_text(n) for n in artwork.iconclass]
        region_texts = [" ".join(filter(None, [d.label.replace("_", " "), d.caption])) for d in own]
        rows = region_rows.get(artwork.pk, [])
        key = str(artwork.pk)
        region_ids[key] = [detail_id for detail_id, _ in rows]
        out.append(
            RerankCandidate(
                id=key,
                text=" ".join(t for t in texts if t),
                image_path=artwork.working_image.name or artwork.image.name or None,
                region_vectors=_vectors([r for _, r in rows]) if rows else None,
                region_texts=region_texts,
                first_stage_score=float(cand.get("first_stage", 0.0)),
                evidence={k: float(v) for k, v in (cand.get("legs") or {}).items()},
            )
        )
    return out, region_ids


def best_regions(
    candidates: Sequence[RerankCandidate],
    region_ids: dict[str, list[int | None]],
    query_vector: np.ndarray | None,
) -> dict[str, int]:
    """For each candidate, the detail whose vector is closest to the query (whole-image rows skipped)."""
    if query_vector is None:
        return {}
    best: dict[str, int] = {}
    for cand in candidates:
        ids = region_ids.get(cand.id, [])
        if cand.region_vectors is None or not any(i is not None for i in ids):
            continue
        sims = cand.region_vectors @ np.asarray(query_vector, dtype=np.float32)
        order = np.argsort(-sims)
        for index in order:
            if ids[int(index)] is not None:
                best[cand.id] = int(ids[int(index)])  # type: ignore[arg-type]
                break
    return best


def rerank_run(
    *,
    text: str,
    query_vector: np.ndarray | None,
    model_key: str,
    level: str,
    candidates: Sequence[dict[str, Any]],
    reranker: Reranker,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Scores and best regions: ``{"scores": {artwork_id: s}, "regions": {artwork_id: detail_id}}``.
    Raises StopRequested when ``should_stop`` turns true between batches."""
    rerank_candidates, region_ids = build_rerank_candidates(
        candidates=candidates, model_key=model_key, level=level
    )
    scores = reranker.score(text, rerank_candidates, query_vector=query_vector, should_stop=should_stop)
    return {
        "scores": {c.id: float(s) for c, s in zip(rerank_candidates, scores, strict=True)},
        "regions": best_regions(rerank_candidates, region_ids, query_vector),
        "reranker": reranker.model_key,
    }


def query_vector_here(
    *,
    text: str,
    model_key: str,
    like_artwork_id: int | None = None,
    like_detail_id: int | None = None,
    like_image: str = "",
) -> np.ndarray | None:
    """The query's vector in a worker or command: the reference image's stored vector, an uploaded
    picture's (raises QueryImageMissing when it has left the cache), else the text's."""
    from search_app.query_encoding import encode_image_here, encode_text_here
    from search_app.retrieval import reference_vectors

    if not model_key:  # the web side has no embedder either: rerank on words and evidence alone
        return None
    if like_image:
        vector, worker_key = encode_image_here(like_image)
        if worker_key != model_key:
            logger.warning("worker embeds with %s but the candidates came from %s", worker_key, model_key)
            return None
        return vector
    if like_artwork_id is not None or like_detail_id is not None:
        return reference_vectors(
            model_key=model_key, like_artwork_id=like_artwork_id, like_detail_id=like_detail_id
        )
    if not text:
        return None
    vector, worker_key = encode_text_here(text)
    if worker_key != model_key:
        logger.warning("rerank worker embeds with %s but the candidates came from %s", worker_key, model_key)
        return None
    return vector


def rerank_remote_run(
    *,
    search_id: str,
    text: str,
    level: str,
    model_key: str,
    candidates: Sequence[dict[str, Any]],
    like_artwork_id: int | None = None,
    like_detail_id: int | None = None,
    like_image: str = "",
) -> None:
    """The rerank task's body: score, then post the answer to the request's mailbox. Stops between
    batches once the request has gone (client disconnected, or a newer search from the same visitor)."""
    from search_app import request_control
    from workers.inference.base import StopRequested
    from workers.inference.registry import get_reranker

    mailbox = request_control.task_ids(search_id)[1]
    if request_control.stop_requested(search_id):
        return
    try:
        result = rerank_run(
            text=text,
            query_vector=query_vector_here(
                text=text,
                model_key=model_key,
                like_artwork_id=like_artwork_id,
                like_detail_id=like_detail_id,
                like_image=like_image,
            ),
            model_key=model_key,
            level=level,
            candidates=candidates,
            reranker=get_reranker(),
            should_stop=lambda: request_control.stop_requested(search_id),
        )
    except StopRequested:
        logger.info("rerank %s stopped: its request has gone or was superseded", search_id)
        # A superseded request may still be waiting: let it answer with the first stage now.
        request_control.post_result(mailbox, {"ok": False, "error": "stopped: request superseded or gone"})
        return
    except Exception as exc:  # the request degrades to the first stage at once instead of at its timeout
        logger.exception("rerank %s failed", search_id)
        request_control.post_result(mailbox, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return
    request_control.post_result(mailbox, {"ok": True, **result})
