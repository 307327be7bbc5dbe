"""First-stage candidate legs: vectors (pgvector), full text, ICONCLASS. Reads only.

Each leg returns hits best first; a detail hit names its artwork and the region. Filters are applied
inside each leg's query, so a filter that keeps a minority of the collection still fills the page: the
HNSW scan runs with ``hnsw.iterative_scan`` (pgvector 0.8) and keeps walking the graph until LIMIT rows
pass the filter, and small filtered sets are scanned exactly instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet

from collections_app.models import Artwork
from search_app.iconclass_expansion import catalogue_notation_texts
from search_app.types import SearchFilters

TS_CONFIG = "english"
DETAIL_LEVELS = ("entity", "group", "scene")
TRIGRAM_MIN = 0.3
NO_FILTERS = SearchFilters()
# An unfiltered leg over a collection known to hold at least ``exact_scan_below`` rows skips the count
# (20,000 heap rows, ~40 ms at 100k details: more than the HNSW search itself) for this long.
LARGE_KNOWN_FOR_S = 60.0
_known_large: dict[tuple[str, str, str, int, tuple[str, ...]], float] = {}


@dataclass
class LegHit:
    artwork_id: int
    score: float
    detail_id: int | None = None


_hidden: tuple[float, np.ndarray] = (-1e18, np.zeros(0, dtype=np.int64))
_hidden_lock = threading.Lock()


def hidden_details() -> np.ndarray:
    """Ids of the details catalogers hid, for the in-memory legs, which hold every detail: re-read at most
    every ``SEARCH["hidden_refresh_s"]`` (5 s; one scan of the ``review_state`` index). A detail hidden
    since then still counts for its artwork's rank until the next read; the page it would show on reads
    the database (``pipeline.present``), so it is never shown."""
    global _hidden
    ttl = float(settings.SEARCH.get("hidden_refresh_s", 5.0))
    read_at, ids = _hidden
    if time.monotonic() - read_at <= ttl:
        return ids
    with _hidden_lock:
        if time.monotonic() - _hidden[0] <= ttl:
            return _hidden[1]
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM collections_app_detail WHERE review_state = 'hidden'")
            ids = np.sort(np.asarray([r[0] for r in cursor.fetchall()], dtype=np.int64))
        _hidden = (time.monotonic(), ids)
    return ids


def table_writes(tables: Sequence[str]) -> tuple[int, ...] | None:
    """Rows inserted, updated and deleted in each table as PostgreSQL's statistics count them (committed
    and flushed, plus this transaction's own): unchanged means nothing was written. None where statistics
    are off."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('track_counts') = 'on', array_agg(ARRAY["
            "pg_stat_get_tuples_inserted(c.oid) + pg_stat_get_xact_tuples_inserted(c.oid), "
            "pg_stat_get_tuples_updated(c.oid) + pg_stat_get_xact_tuples_updated(c.oid), "
            "pg_stat_get_tuples_deleted(c.oid) + pg_stat_get_xact_tuples_deleted(c.oid)] ORDER BY c.oid) "
            "FROM pg_class c WHERE c.oid = ANY(%s::regclass[])",
            [list(tables)],
        )
        on, counts = cursor.fetchone()
    return tuple(int(n) for row in counts for n in row) if on else None


def detail_levels(level: str) -> tuple[str, ...]:
    """The detail levels a search level looks at ("artworks" looks inside every picture too)."""
    return (level,) if level in DETAIL_LEVELS else DETAIL_LEVELS


def _vector_literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{float(x):.6g}" for x in np.asarray(vector, dtype=np.float32).ravel()) + "]"


def _filter_sql(filters: SearchFilters, column: str) -> tuple[str, list[object]]:
    """``AND column IN (<filtered artworks>)``, built by the catalogue's own filter queryset."""
    if filters.is_empty():
        return "", []
    qs = (
        Artwork.objects.filter_catalogue(
            artist=filters.artist or None,
            year_from=filters.year_from,
            year_to=filters.year_to,
            classification=filters.classification or None,
            medium=filters.medium or None,
            collection=filters.collection or None,
        )
        .order_by()
        .values("id")
    )
    sql, params = qs.query.sql_with_params()
    return f" AND {column} IN ({sql})", list(params)


@dataclass(frozen=True)
class VectorLegSql:
    sql: str
    params: list[object]
    exact: bool


def vector_leg_sql(
    *,
    vector: np.ndarray,
    model_key: str,
    target: str,
    kind: str,
    levels: Sequence[str] = DETAIL_LEVELS,
    filters: SearchFilters = NO_FILTERS,
    limit: int,
    exact: bool,
    exclude_artwork_id: int | None = None,
) -> VectorLegSql:
    """The SQL of one vector leg. The HNSW form repeats the partial index's cast and predicate
    (collections_app.vector_indexes) so PostgreSQL can use it; the exact form orders by an expression the
    index does not cover, which forces a scan of the filtered rows."""
    dim = int(np.asarray(vector).size)
    literal = _vector_literal(vector)
    column = f"e.vector::halfvec({dim})" if not exact else "e.vector"
    distance = f"({column} <=> %s::halfvec({dim}))"
    where = ["e.model_key = %s", "e.kind = %s", f"e.dim = {dim}"]
    params: list[object] = [literal, model_key, kind]
    if target == "artwork":
        table, detail_col, join = "collections_app_artworkembedding", "NULL::bigint", ""
    elif target == "detail":
        table, detail_col = "collections_app_detailembedding", "e.detail_id"
        join = " JOIN collections_app_detail d ON d.id = e.detail_id"
        where += ["e.level = ANY(%s)", "d.review_state <> 'hidden'"]
        params.append(list(levels))
    else:
        raise ValueError(f"unknown vector target {target!r}")
    if exclude_artwork_id is not None:
        where.append("e.artwork_id <> %s")
        params.append(exclude_artwork_id)
    filter_sql, filter_params = _filter_sql(filters, "e.artwork_id")
    params += filter_params
    # relaxed_order may return rows slightly out of order: the outer ORDER BY puts them back.
    sql = (
        f"WITH hits AS MATERIALIZED (SELECT e.artwork_id, {detail_col} AS detail_id, {distance} AS distance "
        f"FROM {table} e{join} WHERE {' AND '.join(where)}{filter_sql} "
        f"ORDER BY {distance} LIMIT %s) "
        "SELECT artwork_id, detail_id, 1 - distance FROM hits ORDER BY distance"
    )
    params += [literal, int(limit)]
    return VectorLegSql(sql=sql, params=params, exact=exact)


def _filtered_count(
    *,
    model_key: str,
    target: str,
    kind: str,
    dim: int,
    levels: Sequence[str],
    filters: SearchFilters,
    cap: int,
) -> int:
    """How many rows the vector leg would scan, counted up to ``cap`` (so counting stays cheap)."""
    table = "collections_app_artworkembedding" if target == "artwork" else "collections_app_detailembedding"
    where = ["e.model_key = %s", "e.kind = %s", f"e.dim = {int(dim)}"]
    params: list[object] = [model_key, kind]
    if target == "detail":
        where.append("e.level = ANY(%s)")
        params.append(list(levels))
    filter_sql, filter_params = _filter_sql(filters, "e.artwork_id")
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {table} e WHERE {' AND '.join(where)}{filter_sql} "
            "LIMIT %s) s",
            [*params, *filter_params, cap],
        )
        return int(cursor.fetchone()[0])


def set_hnsw_scan(cursor: Any, *, limit: int) -> None:
    """Session settings for one HNSW query, inside its transaction. ef_search below the LIMIT silently
    returns fewer rows; the iterative scan keeps walking the graph until LIMIT rows pass the filters."""
    ef_search = max(int(settings.SEARCH["hnsw_ef_search"]), int(limit))
    cursor.execute(f"SET LOCAL hnsw.ef_search = {min(ef_search, 1000)}")
    cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")


def vector_leg(
    *,
    vector: np.ndarray,
    model_key: str,
    target: str,
    kind: str,
    levels: Sequence[str] = DETAIL_LEVELS,
    filters: SearchFilters = NO_FILTERS,
    limit: int,
    exclude_artwork_id: int | None = None,
) -> list[LegHit]:
    """Nearest vectors of one (target, kind), filters inside the search. Scores are cosine similarities."""
    cap = int(settings.SEARCH["exact_scan_below"])
    dim = int(np.asarray(vector).size)
    large_key = (model_key, target, kind, dim, tuple(sorted(levels)))
    if cap <= 0:
        exact = False
    elif filters.is_empty() and _known_large.get(large_key, 0.0) > time.monotonic():
        exact = False  # counted at least ``cap`` rows a moment ago; collections shrink slowly
    else:
        count = _filtered_count(
            model_key=model_key, target=target, kind=kind, dim=dim, levels=levels, filters=filters, cap=cap
        )
        exact = count < cap
        if filters.is_empty() and not exact:
            _known_large[large_key] = time.monotonic() + LARGE_KNOWN_FOR_S
    built = vector_leg_sql(
        vector=vector,
        model_key=model_key,
        target=target,
        kind=kind,
        levels=levels,
        filters=filters,
        limit=limit,
        exact=exact,
        exclude_artwork_id=exclude_artwork_id,
    )
    with transaction.atomic(), connection.cursor() as cursor:
        if not exact:
            set_hnsw_scan(cursor, limit=limit)
        cursor.execute(built.sql, built.params)
        rows = cursor.fetchall()
    return [LegHit(artwork_id=a, detail_id=d, score=float(s)) for a, d, s in rows]


def _artwork_document_sql() -> str:
    """An artwork's searchable text: title, artists, ICONCLASS texts, description, then the rest."""
    return (
        "setweight(to_tsvector(%(cfg)s, coalesce(a.title, '')), 'A') || "
        "setweight(to_tsvector(%(cfg)s, coalesce((SELECT string_agg(ar.name, ' ') "
        "FROM collections_app_artist ar "
        "JOIN collections_app_artwork_artists aa ON aa.artist_id = ar.id "
        "WHERE aa.artwork_id = a.id), '')), 'B') || "
        "setweight(to_tsvector(%(cfg)s, coalesce((SELECT string_agg(ic.txt, ' ') FROM ic "
        "WHERE ic.notation = ANY(a.iconclass)), '')), 'B') || "
        "setweight(to_tsvector(%(cfg)s, coalesce(a.description, '')), 'C') || "
        "setweight(to_tsvector(%(cfg)s, coalesce(a.medium, '') || ' ' "
        "|| coalesce(a.classification, '') || ' ' "
        "|| coalesce(a.collection, '')), 'D')"
    )


_DETAIL_TEXT = "replace(d.label, '_', ' ') || ' ' || d.caption"
_ARTWORK_OWN_TEXT = (
    "coalesce(a2.title, '') || ' ' || coalesce(a2.description, '') || ' ' || coalesce(a2.medium, '') || ' ' "
    "|| coalesce(a2.classification, '') || ' ' || coalesce(a2.collection, '')"
)


def _artwork_candidates_sql(text: str) -> str:
    """`` AND a.id IN (...)``: the artworks whose own text, artists or ICONCLASS texts hold any word of the
    query, found through GIN indexes (migration collections_app 0003), so the full document is built and
    ranked only for those instead of for every artwork. Exact: a document can match an indexable query only
    if it holds one of its words. Empty when the query is not indexable (only negated words), which keeps
    the full scan. Reads ``q.anyq`` and the ``ic`` CTE of lexical_leg's query."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT querytree(websearch_to_tsquery(%s, %s)) <> 'T'", [TS_CONFIG, text])
        indexable = bool(cursor.fetchone()[0])
    if not indexable:
        return ""
    cfg = f"'{TS_CONFIG}'::regconfig"  # a constant, as in the indexes' expressions
    anyq = "(SELECT anyq FROM q)"  # an init plan: one value, so the GIN indexes apply
    return (
        " AND a.id IN ("
        "SELECT a2.id FROM collections_app_artwork a2 "
        f"WHERE to_tsvector({cfg}, {_ARTWORK_OWN_TEXT}) @@ {anyq} "
        "UNION SELECT aa2.artwork_id FROM collections_app_artwork_artists aa2 "
        "JOIN collections_app_artist ar2 ON ar2.id = aa2.artist_id "
        f"WHERE to_tsvector({cfg}, ar2.name) @@ {anyq} "
        "UNION SELECT a3.id FROM collections_app_artwork a3 WHERE a3.iconclass && ARRAY("
        f"SELECT ic2.notation FROM ic ic2 WHERE to_tsvector(%(cfg)s, ic2.txt) @@ {anyq})::varchar[])"
    )


def lexical_leg(
    *,
    text: str,
    level: str = "artworks",
    filters: SearchFilters = NO_FILTERS,
    limit: int,
    within: Sequence[int] | None = None,
) -> list[LegHit]:
    """Full text (websearch syntax) over artworks and their details' labels and captions; a trigram
    fallback when the words match nothing (misspellings, names). ``within`` restricts to artwork ids.
    With ``SEARCH["text_index"] = "memory"`` and a saved word index, the words are looked up there instead,
    misspellings included (search_app.text_index); the exclusion checks (``within``) stay in PostgreSQL."""
    if not text.strip():
        return []
    levels = list(detail_levels(level))
    if within is None and settings.SEARCH.get("text_index") == "memory":
        from search_app.text_index import memory_lexical_leg

        found = memory_lexical_leg(text=text, level=level, filters=filters, limit=limit)
        if found is not None:  # None: no word index built yet, PostgreSQL answers
            return found
    notations, texts = catalogue_notation_texts()
    filter_sql, filter_params = _filter_sql(filters, "a.id")
    within_sql = " AND a.id = ANY(%(within)s)" if within is not None else ""
    detail_within = " AND d.artwork_id = ANY(%(within)s)" if within is not None else ""
    # At a detail level only the regions' own words count: an artwork title is not a region.
    artwork_part = (
        "SELECT a.id AS artwork_id, NULL::bigint AS detail_id, "
        f"ts_rank_cd({_artwork_document_sql()}, q.tsq) AS rank "
        f"FROM collections_app_artwork a, q WHERE ({_artwork_document_sql()}) @@ q.tsq{within_sql}"
        f"{_artwork_candidates_sql(text) if within is None else ''}"
        if level == "artworks"
        else "SELECT NULL::bigint AS artwork_id, NULL::bigint AS detail_id, NULL::real AS rank WHERE false"
    )
    sql = (
        "WITH ic(notation, txt) AS (SELECT * FROM unnest(%(notations)s::text[], %(texts)s::text[])), "
        "q AS (SELECT websearch_to_tsquery(%(cfg)s, %(text)s) AS tsq, "
        # any word of the query: the candidates' prefilter (_artwork_candidates_sql)
        "coalesce((SELECT string_agg(quote_literal(w), ' | ')::tsquery FROM "
        "unnest(tsvector_to_array(to_tsvector(%(cfg)s, %(text)s))) w), ''::tsquery) AS anyq), "
        f"art AS ({artwork_part}), "
        "det AS (SELECT d.artwork_id, d.id AS detail_id, "
        f"ts_rank_cd(to_tsvector(%(cfg)s, {_DETAIL_TEXT}), q.tsq) AS rank "
        f"FROM collections_app_detail d, q WHERE d.review_state <> 'hidden' AND d.level = ANY(%(levels)s) "
        f"AND to_tsvector(%(cfg)s, {_DETAIL_TEXT}) @@ q.tsq{detail_within}), "
        "best_det AS (SELECT DISTINCT ON (artwork_id) artwork_id, detail_id, rank FROM det "
        "ORDER BY artwork_id, rank DESC, detail_id), "
        "merged AS (SELECT coalesce(art.artwork_id, best_det.artwork_id) AS artwork_id, best_det.detail_id, "
        "coalesce(art.rank, 0) + coalesce(best_det.rank, 0) AS rank "
        "FROM art FULL OUTER JOIN best_det ON best_det.artwork_id = art.artwork_id) "
        "SELECT m.artwork_id, m.detail_id, m.rank FROM merged m "
        "JOIN collections_app_artwork a ON a.id = m.artwork_id "
        "WHERE true"
        + _percent_params(filter_sql, filter_params)[0]
        + " ORDER BY m.rank DESC, m.artwork_id LIMIT %(limit)s"
    )
    params: dict[str, object] = {
        "notations": notations,
        "texts": texts,
        "cfg": TS_CONFIG,
        "text": text,
        "levels": levels,
        "within": list(within) if within is not None else None,
        "limit": int(limit),
        **_percent_params(filter_sql, filter_params)[1],
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    if rows:
        return [LegHit(artwork_id=a, detail_id=d, score=float(r)) for a, d, r in rows]
    return trigram_leg(text=text, levels=levels, level=level, filters=filters, limit=limit, within=within)


def _percent_params(filter_sql: str, filter_params: list[object]) -> tuple[str, dict[str, object]]:
    """Turn a positional ``%s`` filter into named parameters, to join it with a named-parameter query."""
    names: dict[str, object] = {}
    parts = filter_sql.split("%s")
    out = parts[0]
    for i, part in enumerate(parts[1:]):
        name = f"f{i}"
        names[name] = filter_params[i]
        out += f"%({name})s" + part
    return out, names


def trigram_leg(
    *,
    text: str,
    levels: list[str],
    level: str,
    filters: SearchFilters,
    limit: int,
    within: Sequence[int] | None,
) -> list[LegHit]:
    filter_sql, filter_named = _percent_params(*_filter_sql(filters, "a.id"))
    within_sql = " AND a.id = ANY(%(within)s)" if within is not None else ""
    artwork_part = (
        "SELECT a.id AS artwork_id, NULL::bigint AS detail_id, "
        "word_similarity(%(text)s, a.title || ' ' || a.description) AS sim FROM collections_app_artwork a "
        "WHERE %(text)s <%% (a.title || ' ' || a.description) "
        "AND word_similarity(%(text)s, a.title || ' ' || a.description) >= %(min)s"
        f"{within_sql}{filter_sql} "
        "UNION ALL "
        if level == "artworks"
        else ""
    )
    sql = (
        "SELECT DISTINCT ON (artwork_id) artwork_id, detail_id, sim FROM ("
        + artwork_part
        + "SELECT d.artwork_id AS artwork_id, d.id AS detail_id, "
        f"word_similarity(%(text)s, {_DETAIL_TEXT}) AS sim FROM collections_app_detail d "
        "JOIN collections_app_artwork a ON a.id = d.artwork_id "
        f"WHERE d.review_state <> 'hidden' AND d.level = ANY(%(levels)s) "
        f"AND %(text)s <%% ({_DETAIL_TEXT}) "
        f"AND word_similarity(%(text)s, {_DETAIL_TEXT}) >= %(min)s{within_sql}{filter_sql}) s "
        "ORDER BY artwork_id, sim DESC"
    )
    params = {
        "text": text,
        "min": TRIGRAM_MIN,
        "levels": levels,
        "within": list(within) if within is not None else None,
        **filter_named,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        # ``<%`` finds candidates through the trigram indexes (migration collections_app 0004) at this
        # threshold, a hair under TRIGRAM_MIN so it never drops a row the exact test above keeps.
        cursor.execute(
            "SELECT set_config('pg_trgm.word_similarity_threshold', %s, true)", [str(TRIGRAM_MIN - 1e-6)]
        )
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    rows.sort(key=lambda r: (-r[2], r[0]))
    return [LegHit(artwork_id=a, detail_id=d, score=float(s)) for a, d, s in rows[:limit]]


def iconclass_leg(
    *,
    notations: Sequence[tuple[str, float]],
    level: str = "artworks",
    filters: SearchFilters = NO_FILTERS,
    limit: int,
    within: Sequence[int] | None = None,
) -> list[LegHit]:
    """Artworks (and details) tagged with the expanded notations, by the best notation's match score."""
    if not notations:
        return []
    if within is None and settings.SEARCH.get("text_index") == "memory":
        from search_app.text_index import memory_iconclass_leg

        found = memory_iconclass_leg(notations=notations, level=level, filters=filters, limit=limit)
        if found is not None:  # None: no word index built yet, PostgreSQL answers
            return found
    codes = [n for n, _ in notations]
    weights = [float(w) for _, w in notations]
    filter_sql, filter_named = _percent_params(*_filter_sql(filters, "a.id"))
    within_sql = " AND a.id = ANY(%(within)s)" if within is not None else ""
    artwork_part = (
        "SELECT a.id AS artwork_id, NULL::bigint AS detail_id, max(n.w) AS w FROM collections_app_artwork a "
        "JOIN n ON n.code = ANY(a.iconclass) "
        f"WHERE a.iconclass && %(codes)s::varchar[]{within_sql}{filter_sql} GROUP BY a.id UNION ALL "
        if level == "artworks"
        else ""
    )
    sql = (
        "WITH n(code, w) AS (SELECT * FROM unnest(%(codes)s::text[], %(weights)s::float8[])) "
        "SELECT artwork_id, "
        "(array_agg(detail_id ORDER BY w DESC) FILTER (WHERE detail_id IS NOT NULL))[1], max(w) "
        "FROM ("
        + artwork_part
        + "SELECT d.artwork_id AS artwork_id, d.id AS detail_id, max(n.w) AS w FROM collections_app_detail d "
        "JOIN collections_app_artwork a ON a.id = d.artwork_id JOIN n ON n.code = ANY(d.iconclass) "
        "WHERE d.iconclass && %(codes)s::varchar[] AND d.review_state <> 'hidden' "
        "AND d.level = ANY(%(levels)s)"
        f"{within_sql}{filter_sql} GROUP BY d.artwork_id, d.id) s "
        "GROUP BY artwork_id ORDER BY max(w) DESC, artwork_id LIMIT %(limit)s"
    )
    params = {
        "codes": codes,
        "weights": weights,
        "levels": list(detail_levels(level)),
        "within": list(within) if within is not None else None,
        "limit": int(limit),
        **filter_named,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [LegHit(artwork_id=a, detail_id=d, score=float(w)) for a, d, w in rows]


def halfvec_rows(queryset: QuerySet[Any], *fields: str) -> list[tuple[Any, ...]]:
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


def reference_vectors(
    *, model_key: str, like_artwork_id: int | None = None, like_detail_id: int | None = None
) -> np.ndarray | None:
    """The stored image vector of an artwork or detail, for "more like this"."""
    from collections_app.models import ArtworkEmbedding, DetailEmbedding

    row: ArtworkEmbedding | DetailEmbedding | None
    if like_detail_id is not None:
        row = DetailEmbedding.objects.filter(
            detail_id=like_detail_id, model_key=model_key, kind="image"
        ).first()
    elif like_artwork_id is not None:
        row = ArtworkEmbedding.objects.filter(
            artwork_id=like_artwork_id, model_key=model_key, kind="image"
        ).first()
    else:
        return None
    if row is None:
        return None
    value = row.vector
    return np.asarray(value.to_list() if hasattr(value, "to_list") else value, dtype=np.float32)
