"""One search pipeline for the pages, the API and the evaluation command:
parse -> encode -> candidates (vector, lexical, ICONCLASS legs, fused) -> rerank (rerank queue) -> page.

The web process never loads a model: query encoding and reranking run on the ``rerank`` queue, and the
request awaits their answers without blocking the event loop. When the request is cancelled (the client
disconnected) or superseded (the same visitor searched again), the rerank is told to stop between batches.
If no worker answers in time, the answer degrades to the first stage and says so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.db import OperationalError, connection, transaction

from collections_app.models import Artwork
from search_app import request_control
from search_app.fusion import Candidate, final_score, normalised_first_stage, reciprocal_rank_fusion
from search_app.iconclass_expansion import expand_query
from search_app.media import thumbnail_url_of
from search_app.query_parsing import QueryError, parse_query_text
from search_app.reranking import named_detail, named_placement
from search_app.retrieval import (
    LegHit,
    detail_levels,
    iconclass_leg,
    lexical_leg,
    reference_vectors,
)
from search_app.types import LEVELS, DetailHit, SearchHit, SearchQuery, SearchResponse
from workers.inference.base import ModelLoadError

__all__ = ["QueryError", "parse_query_text", "search", "search_sync"]

logger = logging.getLogger(__name__)

ENCODE_TIMEOUT_S = 3.0
RANKING_CACHE_TTL_S = 300
PICTURE_EXPIRED = "the uploaded picture has expired here: please upload it again"


@dataclass
class FirstStage:
    candidates: list[Candidate]
    legs: dict[str, list[LegHit]] = field(default_factory=dict)
    notations: list[tuple[str, float]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # legs cut by their time budget, said in ``degraded``


def _within_budget(run: Callable[[], list[LegHit]], *, name: str, skipped: list[str]) -> list[LegHit]:
    """Runs a word-matching leg with ``SEARCH["text_leg_budget_ms"]`` as PostgreSQL's statement_timeout (per
    statement: a leg of several statements may take a multiple of it). On a huge collection a common word can
    match half of it, and ranking those rows must not hold the whole search (measured at 1M details: ~1 s
    p50, 3-5 s p95). Over budget, the leg is skipped and the answer says so. 0 turns the budget off."""
    budget_ms = int(settings.SEARCH.get("text_leg_budget_ms", 0))
    if budget_ms <= 0 or _words_in_memory():
        return run()
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('statement_timeout')")
            before = cursor.fetchone()[0]
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [f"{budget_ms}ms"])
            hits = run()
            # Back to what it was: inside an outer transaction the setting would outlive this block.
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [before])
            return hits
    except OperationalError as error:
        if "statement timeout" not in str(error):
            raise
        logger.warning("%s leg over its %d ms budget: skipped", name, budget_ms)
        skipped.append(f"{name} matches skipped (over {budget_ms} ms)")
        return []


def _words_in_memory() -> bool:
    """The word legs answer from the in-memory index: milliseconds, no statement to bound (and the budget's
    four round trips to PostgreSQL saved)."""
    if settings.SEARCH.get("text_index") != "memory":
        return False
    from search_app.text_index import current_index

    return current_index() is not None


def _validate(query: SearchQuery) -> None:
    if query.level not in LEVELS:
        raise QueryError(f"level must be one of {', '.join(LEVELS)}")
    references = [query.image_bytes or query.like_image, query.like_artwork_id, query.like_detail_id]
    if not (query.text.strip() or any(references)):
        raise QueryError("nothing to search for: give text, an image, or an artwork for 'more like this'")
    if sum(1 for r in references if r) > 1:
        raise QueryError("give one picture to search by: an upload, an artwork or a detail")
    if query.limit < 1 or query.offset < 0:
        raise QueryError("limit must be positive and offset not negative")


def _stash_upload(query: SearchQuery) -> SearchQuery:
    """An uploaded picture is validated and stashed once; from here on the query names it by digest."""
    if not query.image_bytes:
        return query
    from search_app.query_encoding import stash_query_image
    from workers.imaging import ImageRejected

    try:
        digest = stash_query_image(query.image_bytes)
    except ImageRejected as error:
        raise QueryError(f"that picture cannot be searched by: {error}") from error
    return dataclasses.replace(query, image_bytes=None, like_image=digest)


def _normalise(query: SearchQuery) -> tuple[str, tuple[str, ...]]:
    """The text to look for and the exclusions; parsing again is harmless for text already parsed."""
    text, found = parse_query_text(query.text)
    exclude = tuple(dict.fromkeys([*query.exclude, *found]))
    return text, exclude


def _depth(query: SearchQuery) -> int:
    return max(int(query.depth or settings.SEARCH["candidates"]), query.offset + query.limit)


def _vector_leg_function() -> Callable[..., list[LegHit]]:
    """pgvector (default) or FAISS, by settings.SEARCH["index"]; both filter inside the search."""
    if settings.SEARCH["index"] == "faiss":
        from search_app.faiss_index import faiss_leg

        return faiss_leg
    from search_app.retrieval import vector_leg

    return vector_leg


def first_stage(
    query: SearchQuery, *, text: str, exclude: tuple[str, ...], vector: np.ndarray | None, model_key: str
) -> FirstStage:
    """Candidates from every leg, fused, exclusions marked."""
    depth = _depth(query)
    levels = detail_levels(query.level)
    like = query.like_artwork_id
    jobs: dict[str, Callable[[], list[LegHit]]] = {}  # in this order for the fusion
    vector_leg = _vector_leg_function()
    if vector is not None:
        common: dict[str, Any] = {
            "vector": vector,
            "model_key": model_key,
            "filters": query.filters,
            "exclude_artwork_id": like,
        }
        if query.level == "artworks":
            jobs["vector"] = functools.partial(
                vector_leg, target="artwork", kind="image", limit=depth, **common
            )
        # Details come many per artwork: fetch deeper so enough distinct artworks remain after grouping.
        details: dict[str, Any] = {"target": "detail", "levels": levels, "limit": depth * 3, **common}
        jobs["vector_details"] = functools.partial(vector_leg, kind="image", **details)
        if text:
            jobs["vector_captions"] = functools.partial(vector_leg, kind="text", **details)
    skipped: list[str] = []
    if text and query.lexical:
        jobs["lexical"] = functools.partial(
            _within_budget,
            lambda: lexical_leg(text=text, level=query.level, filters=query.filters, limit=depth),
            name="word",
            skipped=skipped,
        )
    notations: list[tuple[str, float]] = []
    if text and query.iconclass:
        notations = expand_query(text)
        jobs["iconclass"] = functools.partial(
            _within_budget,
            lambda: iconclass_leg(notations=notations, level=query.level, filters=query.filters, limit=depth),
            name="ICONCLASS",
            skipped=skipped,
        )
    legs = _run_legs(jobs)
    # A few more than the depth: present() drops what was deleted since an in-memory index read it. The
    # PostgreSQL legs read live rows: with only them, there is nothing to check.
    fused = reciprocal_rank_fusion(legs, limit=depth + 8)
    if settings.SEARCH["index"] == "faiss" or _words_in_memory():
        fused = present(fused)
    candidates = fused[:depth]
    if like is not None:
        candidates = [c for c in candidates if c.artwork_id != like]
    if exclude and candidates:
        _mark_excluded(candidates, exclude=exclude, level=query.level)
    return FirstStage(candidates=candidates, legs=legs, notations=notations, skipped=skipped)


def present(candidates: list[Candidate]) -> list[Candidate]:
    """The candidates whose artwork still exists, their region dropped where its detail was deleted or
    hidden since an index read it. The in-memory legs answer without the database (FAISS catches up every
    few seconds, the word index keeps deleted artworks until its next build, hidden details are re-read
    every ``SEARCH["hidden_refresh_s"]``): this one query checks every leg's hits at once."""
    if not candidates:
        return candidates
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.artwork_id, d.id FROM unnest(%s::bigint[], %s::bigint[]) AS c(artwork_id, detail_id) "
            "JOIN collections_app_artwork a ON a.id = c.artwork_id "
            "LEFT JOIN collections_app_detail d ON d.id = c.detail_id AND d.review_state <> 'hidden'",
            [[c.artwork_id for c in candidates], [c.detail_id for c in candidates]],
        )
        found = dict(cursor.fetchall())
    kept = [c for c in candidates if c.artwork_id in found]
    for c in kept:
        if c.detail_id is not None and found[c.artwork_id] != c.detail_id:
            c.detail_id = None
    return kept


def _parallel_legs() -> bool:
    """``SEARCH["parallel_legs"]``: run the legs on threads. Worth it with a connection pool
    (``DATABASE_POOL``): each thread needs its own connection, and without a pool it opens one (~6 ms)."""
    chosen = settings.SEARCH.get("parallel_legs")
    if chosen is None:
        return bool(settings.DATABASES["default"].get("OPTIONS", {}).get("pool"))
    return bool(chosen)


_LEG_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="search-leg")


def _run_legs(jobs: dict[str, Callable[[], list[LegHit]]]) -> dict[str, list[LegHit]]:
    """Each leg's hits, in the jobs' order. On threads when chosen: FAISS and NumPy release the interpreter,
    and each thread waits on its own database connection, so the legs overlap instead of adding up."""
    if len(jobs) < 2 or not _parallel_legs():
        return {name: job() for name, job in jobs.items()}

    def on_own_connection(job: Callable[[], list[LegHit]]) -> list[LegHit]:
        try:
            return job()
        finally:
            connection.close()  # this thread's: back to the pool

    futures = {name: _LEG_THREADS.submit(on_own_connection, job) for name, job in jobs.items()}
    return {name: future.result() for name, future in futures.items()}


def _mark_excluded(candidates: list[Candidate], *, exclude: tuple[str, ...], level: str) -> None:
    """Text evidence (titles, labels, captions, ICONCLASS) for each excluded phrase pushes a candidate down.
    Vector similarity is not used here: the offline embedder's cosine says "similar", not "contains"."""
    ids = [c.artwork_id for c in candidates]
    hit_ids: set[int] = set()
    for phrase in exclude:
        hit_ids.update(
            h.artwork_id for h in lexical_leg(text=phrase, level=level, limit=len(ids), within=ids)
        )
        notations = expand_query(phrase)
        hit_ids.update(
            h.artwork_id for h in iconclass_leg(notations=notations, level=level, limit=len(ids), within=ids)
        )
    for c in candidates:
        c.excluded = c.artwork_id in hit_ids


def _rerank_payload(candidates: list[Candidate]) -> list[dict[str, Any]]:
    first = normalised_first_stage(candidates)
    return [
        {"artwork_id": c.artwork_id, "first_stage": first[c.artwork_id], "legs": dict(c.legs)}
        for c in candidates
    ]


_ARTWORK_COLUMNS = ("id", "source_id", "title", "display_date", "thumbnail", "working_image", "image",
                    "iiif_url", "image_url")  # fmt: skip
_DETAIL_COLUMNS = ("id", "artwork_id", "level", "x", "y", "w", "h", "label", "caption", "confidence")


def page_artworks(artwork_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The page's artworks (only the fields a hit shows) with their artists' names and thumbnail URL, in
    one query: the ORM's ``in_bulk`` with a prefetch took two queries and ~5 ms of model building for 24
    hits."""
    if not artwork_ids:
        return {}
    artists = Artwork.artists.through._meta.db_table
    sql = (
        "SELECT " + ", ".join(f"a.{c}" for c in _ARTWORK_COLUMNS) + ", coalesce(("
        f"SELECT string_agg(ar.name, ', ' ORDER BY ar.sort_name, ar.name, ar.id) FROM {artists} aa "
        "JOIN collections_app_artist ar ON ar.id = aa.artist_id WHERE aa.artwork_id = a.id), '') "
        "FROM collections_app_artwork a WHERE a.id = ANY(%s)"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [artwork_ids])
        rows = cursor.fetchall()
    out = {}
    for row in rows:
        fields = dict(zip(_ARTWORK_COLUMNS, row[:-1], strict=True))
        fields["artist_names"] = row[-1]
        fields["thumbnail_url"] = thumbnail_url_of(
            **{k: fields[k] or "" for k in ("thumbnail", "working_image", "iiif_url", "image", "image_url")}
        )
        out[row[0]] = fields
    return out


def page_details(
    detail_ids: list[int], *, named_for: list[int], levels: tuple[str, ...]
) -> dict[int, dict[str, Any]]:
    """Visible details by id: the ones given, and every labelled one of the ``named_for`` artworks at
    these levels (to choose the one the query names, ``named_detail``). One query."""
    if not detail_ids and not named_for:
        return {}
    sql = (
        "SELECT " + ", ".join(_DETAIL_COLUMNS) + " FROM collections_app_detail "
        "WHERE review_state <> 'hidden' AND (id = ANY(%s) OR "
        "(artwork_id = ANY(%s) AND level = ANY(%s) AND label <> ''))"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [detail_ids, named_for, list(levels)])
        return {row[0]: dict(zip(_DETAIL_COLUMNS, row, strict=True)) for row in cursor.fetchall()}


def named_regions(text: str, details: dict[int, dict[str, Any]], artwork_ids: list[int]) -> dict[int, int]:
    """For artworks whose region the reranker did not choose: the most confident detail with the label
    the query names (``named_detail``, as the rerank chooses); none when it names none, and the first
    stage's region stays."""
    wanted = set(artwork_ids)
    by_artwork: dict[int, list[tuple[int, str, float]]] = {}
    for d in details.values():
        if d["artwork_id"] in wanted and d["label"]:
            by_artwork.setdefault(d["artwork_id"], []).append((d["id"], d["label"], float(d["confidence"])))
    named = {artwork_id: named_detail(text, found) for artwork_id, found in by_artwork.items()}
    return {artwork_id: detail_id for artwork_id, detail_id in named.items() if detail_id is not None}


def page_placements(artwork_ids: list[int]) -> dict[int, list[tuple[str, tuple[float, float, float, float]]]]:
    """The artworks' placements, ``{artwork_id: [(label, box)]}``. One query."""
    out: dict[int, list[tuple[str, tuple[float, float, float, float]]]] = {}
    if not artwork_ids:
        return out
    sql = "SELECT artwork_id, label, x, y, w, h FROM collections_app_placement WHERE artwork_id = ANY(%s)"
    with connection.cursor() as cursor:
        cursor.execute(sql, [artwork_ids])
        for artwork_id, label, x, y, w, h in cursor.fetchall():
            out.setdefault(artwork_id, []).append((label, (x, y, w, h)))
    return out


def shown_region(
    detail: dict[str, Any] | None, placed: tuple[str, tuple[float, float, float, float]] | None
) -> DetailHit | None:
    """The region a hit shows: where the detector places the thing the query names, when it placed it;
    else the chosen detail."""
    if placed is not None:
        return DetailHit(id=None, level="placement", box=placed[1], label=placed[0])
    if detail is None:
        return None
    box = (detail["x"], detail["y"], detail["w"], detail["h"])
    return DetailHit(detail["id"], detail["level"], box, label=detail["label"], caption=detail["caption"])


def assemble(
    query: SearchQuery,
    stage: FirstStage,
    *,
    rerank: dict[str, Any] | None,
) -> tuple[list[SearchHit], bool]:
    """Final scores, threshold, the requested page, with the artworks' fields and best regions."""
    alpha = float(settings.SEARCH["alpha"] if query.alpha is None else query.alpha)
    threshold = float(settings.SEARCH["threshold"] if query.threshold is None else query.threshold)
    first = normalised_first_stage(stage.candidates)
    scores: dict[str, float] = (rerank or {}).get("scores", {})
    regions: dict[str, int] = (rerank or {}).get("regions", {})
    rows = []
    for c in stage.candidates:
        rr = scores.get(str(c.artwork_id))
        detail_id = regions.get(str(c.artwork_id), c.detail_id)
        score = final_score(first_stage=first[c.artwork_id], rerank=rr, alpha=alpha, excluded=c.excluded)
        rows.append((score, c, rr, detail_id))
    rows.sort(key=lambda r: (-r[0], r[1].artwork_id))
    rows = [r for r in rows if r[0] >= threshold]
    if query.level != "artworks":
        rows = [r for r in rows if r[3] is not None]  # a detail search answers with regions
    page = rows[query.offset : query.offset + query.limit]
    has_more = len(rows) > query.offset + query.limit
    # Not reranked (asked, or degraded): the region the query names is chosen here.
    unrouted = [r[1].artwork_id for r in page if str(r[1].artwork_id) not in regions] if query.text else []
    details = page_details(
        [r[3] for r in page if r[3] is not None], named_for=unrouted, levels=detail_levels(query.level)
    )
    text = _normalise(query)[0] if query.text else ""
    if unrouted:
        named = named_regions(text, details, unrouted)
        page = [(s, c, rr, named.get(c.artwork_id, d)) for s, c, rr, d in page]
    # An artworks search shows where the thing the query names is placed; a detail search, its details.
    placing = bool(text) and query.level == "artworks"
    placements = page_placements([r[1].artwork_id for r in page]) if placing else {}
    artworks = page_artworks([r[1].artwork_id for r in page])
    hits = []
    for score, c, rr, detail_id in page:
        if c.artwork_id not in artworks:
            continue
        artwork = artworks[c.artwork_id]
        d = details.get(detail_id) if detail_id is not None else None
        placed = named_placement(text, placements[c.artwork_id]) if c.artwork_id in placements else None
        hits.append(
            SearchHit(
                artwork_id=artwork["id"],
                source_id=artwork["source_id"],
                title=artwork["title"],
                artist_names=artwork["artist_names"],
                display_date=artwork["display_date"],
                thumbnail_url=artwork["thumbnail_url"],
                score=round(score, 6),
                vector_score=round(first[c.artwork_id], 6),
                rerank_score=None if rr is None else round(rr, 6),
                detail=shown_region(d, placed),
                legs={k: round(v, 6) for k, v in c.legs.items()} | ({"excluded": 1.0} if c.excluded else {}),
            )
        )
    return hits, has_more


def _ranking_cache_key(query: SearchQuery, model_key: str) -> str:
    fields = dataclasses.asdict(dataclasses.replace(query, offset=0, limit=0, image_bytes=None))
    raw = json.dumps([model_key, fields], sort_keys=True, default=str)
    return "semart:search:ranking:" + hashlib.sha256(raw.encode()).hexdigest()


def _embedder_key() -> str:
    from search_app.query_encoding import embedder_model_key

    return embedder_model_key()


def _prepare(
    query: SearchQuery, text: str, *, workers: bool
) -> tuple[str | None, dict[str, Any] | None, np.ndarray | None]:
    """The synchronous first steps of a search, in one hop: the embedder's key (None when no embedder is
    installed), the cached ranking of a later page, and the query text's vector when the cache holds it."""
    from search_app.query_encoding import cached_text_vector

    try:
        model_key = _embedder_key()
    except ModelLoadError as error:
        logger.error("no embedder: %s", error)
        return None, None, None
    if not workers:
        return model_key, None, None
    cached = cache.get(_ranking_cache_key(query, model_key)) if query.offset else None
    by_text = not (query.like_artwork_id or query.like_detail_id or query.like_image)
    vector = cached_text_vector(text, model_key=model_key) if text and by_text and cached is None else None
    return model_key, cached, vector


def _first_stage_and_page(
    query: SearchQuery,
    *,
    text: str,
    exclude: tuple[str, ...],
    vector: np.ndarray | None,
    model_key: str,
    timings: dict[str, float],
    remember_as: str | None,
) -> tuple[FirstStage, tuple[list[SearchHit], bool]]:
    """A search without a rerank, in one hop: candidates, the page, and the ranking remembered for the
    next pages (unless a leg was skipped: a degraded ranking is not kept)."""
    t = time.perf_counter()
    stage = first_stage(query, text=text, exclude=exclude, vector=vector, model_key=model_key)
    timings["candidates"] = _ms(t)
    cache_key = remember_as if not stage.skipped else None
    return stage, _page_and_remember(query, stage, rerank=None, cache_key=cache_key)


def _page_and_remember(
    query: SearchQuery, stage: FirstStage, *, rerank: dict[str, Any] | None, cache_key: str | None
) -> tuple[list[SearchHit], bool]:
    page = assemble(query, stage, rerank=rerank)
    if cache_key is not None:
        _remember(cache_key, stage, rerank)
    return page


def _remember(cache_key: str, stage: FirstStage, rerank: dict[str, Any] | None) -> None:
    """The ranking, for the next pages of the same search (``offset``)."""
    cache.set(cache_key, _stage_to_cache(stage, rerank), RANKING_CACHE_TTL_S)


def _stage_from_cache(raw: dict[str, Any]) -> tuple[FirstStage, dict[str, Any] | None]:
    candidates = [Candidate(**c) for c in raw["candidates"]]
    return FirstStage(candidates=candidates), raw.get("rerank")


def _stage_to_cache(stage: FirstStage, rerank: dict[str, Any] | None) -> dict[str, Any]:
    # A shallow copy per candidate (its one nested field is a flat dict): ``dataclasses.asdict``, which
    # deep-copies recursively, took 0.5 ms for 64 candidates, in every search.
    candidates = [{**vars(c), "legs": dict(c.legs)} for c in stage.candidates]
    return {"candidates": candidates, "rerank": rerank}


async def search(query: SearchQuery, *, request_key: str | None = None) -> SearchResponse:
    """The pipeline for async callers (the pages, /search.json, the API). A new search with the same
    ``request_key`` stops the previous one's rerank; a cancelled call stops its own."""
    _validate(query)
    if query.image_bytes:
        query = await sync_to_async(_stash_upload)(query)
    search_id = uuid.uuid4().hex
    if request_key and not request_control.queue_down():
        request_control.supersede(request_key=request_key, search_id=search_id)
    try:
        return await _search(query, search_id=search_id, workers=not request_control.queue_down())
    except asyncio.CancelledError:
        # Synchronous Redis on purpose: the coroutine is being torn down and must not await again.
        request_control.request_stop(search_id)
        raise
    except request_control.QUEUE_ERRORS as error:
        request_control.queue_failed(error)
        return await _search(query, search_id=search_id, workers=False)


async def _search(query: SearchQuery, *, search_id: str, workers: bool = True) -> SearchResponse:
    """``workers=False`` when Redis (broker, mailboxes, flags) is down: no worker can encode the query or
    rerank, so the answer comes from what the database holds (the lexical and ICONCLASS legs, and stored
    vectors for "more like this"), and says so."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    text, exclude = _normalise(query)
    degraded: list[str] = [] if workers else ["task queue unreachable: not reranked"]
    # Each ``sync_to_async`` is a hop to the thread that runs synchronous code and back (~0.1-0.5 ms on 2
    # busy cores): the steps are grouped so that a search without a rerank makes two.
    model_key, cached, vector = await sync_to_async(_prepare)(query, text, workers=workers)
    if model_key is None:  # e.g. the offline head is not installed: words still find things
        model_key = ""
        if workers:
            degraded.append("no image-text model installed: text and ICONCLASS matches only")
    cache_key = _ranking_cache_key(query, model_key)
    if cached is not None:
        stage, rerank = _stage_from_cache(cached)
        hits, has_more = await sync_to_async(assemble)(query, stage, rerank=rerank)
        timings["total"] = _ms(started)
        return SearchResponse(
            query=query, hits=hits, has_more=has_more, reranked=rerank is not None, timings_ms=timings
        )

    t = time.perf_counter()
    if not model_key or vector is not None:
        pass
    elif query.like_artwork_id is not None or query.like_detail_id is not None:
        vector = await sync_to_async(reference_vectors)(
            model_key=model_key, like_artwork_id=query.like_artwork_id, like_detail_id=query.like_detail_id
        )
        if vector is None and workers:
            degraded.append("that picture has no embedding yet: text matches only")
    elif not workers:
        pass  # encoding happens on the rerank queue
    elif query.like_image:
        from search_app.query_encoding import QueryImageMissing, encode_image_remote

        timeout = float(settings.SEARCH.get("encode_timeout_s", ENCODE_TIMEOUT_S))
        try:
            vector = await encode_image_remote(query.like_image, search_id=search_id, timeout_s=timeout)
        except QueryImageMissing:
            raise QueryError(PICTURE_EXPIRED) from None
        if vector is None:
            degraded.append("image encoder unavailable: text and ICONCLASS matches only")
    elif text:
        from search_app.query_encoding import encode_text_remote

        timeout = float(settings.SEARCH.get("encode_timeout_s", ENCODE_TIMEOUT_S))
        vector = await encode_text_remote(text, search_id=search_id, timeout_s=timeout)
        if vector is None:
            degraded.append("query encoder unavailable: text and ICONCLASS matches only")
    timings["encode"] = _ms(t)
    if not workers and vector is None:
        degraded.append("text and ICONCLASS matches only")

    reranks = workers and query.rerank
    t = time.perf_counter()
    if reranks:
        stage = await sync_to_async(first_stage)(
            query, text=text, exclude=exclude, vector=vector, model_key=model_key
        )
        timings["candidates"] = _ms(t)
    else:  # the page in the same hop
        stage, (hits, has_more) = await sync_to_async(_first_stage_and_page)(
            query, text=text, exclude=exclude, vector=vector, model_key=model_key, timings=timings,
            remember_as=None if degraded else cache_key,
        )  # fmt: skip
    degraded += stage.skipped

    rerank = None
    if reranks and stage.candidates:
        t = time.perf_counter()
        rerank = await _rerank_remote(query, stage, search_id=search_id, text=text, model_key=model_key)
        timings["rerank"] = _ms(t)
        if rerank is None:
            degraded.append("rerank unavailable: first-stage order")
    if reranks:
        hits, has_more = await sync_to_async(_page_and_remember)(
            query, stage, rerank=rerank, cache_key=cache_key if not degraded else None
        )
    timings["total"] = _ms(started)
    return SearchResponse(
        query=query,
        hits=hits,
        has_more=has_more,
        reranked=rerank is not None,
        degraded="; ".join(degraded),
        timings_ms=timings,
    )


async def _rerank_remote(
    query: SearchQuery, stage: FirstStage, *, search_id: str, text: str, model_key: str
) -> dict[str, Any] | None:
    from workers.search_tasks import RERANK_QUEUE, search_rerank

    timeout = float(settings.SEARCH["rerank_timeout_s"])
    task_id = request_control.task_ids(search_id)[1]
    search_rerank.apply_async(
        kwargs={
            "search_id": search_id,
            "text": text,
            "level": query.level,
            "model_key": model_key,
            "candidates": _rerank_payload(stage.candidates),
            "like_artwork_id": query.like_artwork_id,
            "like_detail_id": query.like_detail_id,
            "like_image": query.like_image,
        },
        task_id=task_id,
        queue=RERANK_QUEUE,
        expires=timeout,  # a rerank nobody waits for any more is dropped unread
    )
    answer = await request_control.wait_result(task_id, timeout_s=timeout)
    if answer is None or not answer.get("ok"):
        # Nobody will read a late answer: stop the work (or drop it, if it is still queued).
        request_control.request_stop(search_id)
        if answer:
            logger.warning("rerank failed: %s", answer.get("error"))
        return None
    return answer


def search_sync(query: SearchQuery, *, in_process: bool = False) -> SearchResponse:
    """The pipeline for sync callers. ``in_process`` runs the models here instead of on the rerank queue:
    for the evaluation command and workers, never for the web process."""
    if not in_process:
        return async_to_sync(search)(query)
    _validate(query)
    query = _stash_upload(query)
    from search_app.query_encoding import QueryImageMissing
    from search_app.reranking import query_vector_here, rerank_run
    from workers.inference.registry import get_reranker

    timings: dict[str, float] = {}
    started = time.perf_counter()
    text, exclude = _normalise(query)
    degraded = ""
    try:
        model_key = _embedder_key()
    except ModelLoadError as error:
        logger.error("no embedder: %s", error)
        model_key, degraded = "", "no image-text model installed: text and ICONCLASS matches only"
    t = time.perf_counter()
    try:
        vector = query_vector_here(
            text=text,
            model_key=model_key,
            like_artwork_id=query.like_artwork_id,
            like_detail_id=query.like_detail_id,
            like_image=query.like_image,
        )
    except QueryImageMissing:
        raise QueryError(PICTURE_EXPIRED) from None
    timings["encode"] = _ms(t)
    t = time.perf_counter()
    stage = first_stage(query, text=text, exclude=exclude, vector=vector, model_key=model_key)
    timings["candidates"] = _ms(t)
    degraded = "; ".join(filter(None, [degraded, *stage.skipped]))
    rerank = None
    if query.rerank and stage.candidates:
        t = time.perf_counter()
        rerank = rerank_run(
            text=text,
            query_vector=vector,
            model_key=model_key,
            level=query.level,
            candidates=_rerank_payload(stage.candidates),
            reranker=get_reranker(),
        )
        timings["rerank"] = _ms(t)
    hits, has_more = assemble(query, stage, rerank=rerank)
    timings["total"] = _ms(started)
    return SearchResponse(
        query=query,
        hits=hits,
        has_more=has_more,
        reranked=rerank is not None,
        degraded=degraded,
        timings_ms=timings,
    )


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 2)
