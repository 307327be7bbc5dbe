"""An in-memory word index (BM25) for the full-text and ICONCLASS legs of large collections
(``SEARCH["text_index"] = "memory"``), beside FAISS for the vectors.

Why: PostgreSQL finds the rows holding a query's words through GIN indexes, but then ranks every one of
them. On a million details a common word ("saint", "halo") matches a large share of the rows, and the
leg took ~1 s p50 and 3-5 s p95 (docs/benchmarks.md). Here the ranking weights are computed once, at build
time, and a query adds up the posting lists of its words in NumPy: a few milliseconds at 1M details.

What it holds: two document sets, each a term -> (documents, BM25 weights) posting table.
- *artworks*: the same weighted document as the PostgreSQL leg (title A; artists and ICONCLASS texts B;
  description C; medium, classification, collection D), a word's frequency counted with PostgreSQL's
  ``ts_rank`` weights for its fields;
- *details*: each visible detail's label and caption, with its level;
- for both, which ICONCLASS notations tag them (the ICONCLASS leg: PostgreSQL aggregated every tagged row,
  ~0.2 s a query at 1M details).
Words are PostgreSQL's own lexemes (``to_tsvector('english', ...)`` at build time,
``websearch_to_tsquery`` for the query), so stemming and stop words match the PostgreSQL leg exactly.

A document matches as in the PostgreSQL leg: it holds every word of the query (any, when the query says
"or"), and none of its negated words (``-blue``); a phrase counts as its words. Matches are ranked by BM25
(k1 1.2, b 0.75) instead of ``ts_rank_cd``. When nothing matches, words no document holds are replaced by
the closest known words (trigram similarity, as pg_trgm measures it: the PostgreSQL leg's trigram fallback
took 0.15-0.9 s a query at 1M details), and then, when no document holds every word (common for long queries
in plain language), documents holding any of them are ranked.

Kept in step like the FAISS index: ``manage.py search_index rebuild`` builds and saves it; a search never
builds it (23-28 s at 1M details: until one is saved, searches use the PostgreSQL leg, and a process looks
for a saved one again every ``SYNC_EVERY_S``). Every ``SYNC_EVERY_S`` a background thread takes a newer saved
build if there is one, then re-indexes the artworks changed since its build (edited, re-processed, details
edited) into a small second segment that overrides the first; when that segment grows past
``REBUILD_FRACTION`` of the first, the thread rebuilds the whole index and saves it. Hidden details are
left out by the ids ``retrieval.hidden_details`` re-reads every few seconds, and the pipeline checks the
fused candidates against the database in one query (``pipeline.present``), so a deleted artwork or a
hidden detail never shows, however stale the index.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection

from search_app.iconclass_expansion import catalogue_notation_texts
from search_app.retrieval import (
    _DETAIL_TEXT,
    DETAIL_LEVELS,
    NO_FILTERS,
    TS_CONFIG,
    LegHit,
    _artwork_document_sql,
    _filter_sql,
    detail_levels,
    hidden_details,
    table_writes,
)
from search_app.types import SearchFilters

logger = logging.getLogger(__name__)

K1 = 1.2
B = 0.75
# PostgreSQL's ts_rank defaults for the weight letters of a tsvector ({D, C, B, A}).
FIELD_WEIGHTS = {"A": 1.0, "B": 0.4, "C": 0.2, "D": 0.1}
LEVEL_CODES = {level: i for i, level in enumerate(DETAIL_LEVELS)}
# A sync reads the changed artworks through unindexed timestamps (~0.1 s of database work at 1M details).
SYNC_EVERY_S = 30.0
# Artworks changed within this long before a sync's start are looked at again by the next one: a change
# committed after the sync read the table carries an earlier timestamp than the commit.
SYNC_OVERLAP_S = 60.0
REBUILD_FRACTION = 0.2
FUZZY_MIN_SIMILARITY = 0.4
FORMAT_VERSION = 2
_QUERY_LEXEME = re.compile(r"(!?)'((?:[^']|'')+)'")


def index_path() -> Path:
    return Path(settings.SEMART_DATA_DIR) / "indexes" / "text" / f"words-v{FORMAT_VERSION}.npz"


@dataclass
class Postings:
    """Term -> documents and their BM25 weights, in one flat array per field (CSC layout)."""

    terms: dict[str, int]
    indptr: np.ndarray  # int64, len(terms) + 1
    docs: np.ndarray  # int32 document positions, sorted within a term
    weights: np.ndarray  # float32 BM25 weight of the term in the document
    n_docs: int

    df: np.ndarray  # float64 documents holding each term
    average_length: float

    @classmethod
    def build(
        cls,
        doc_of: np.ndarray,
        terms_of: list[str],
        tf_of: np.ndarray,
        n_docs: int,
        *,
        reference: Postings | None = None,
    ) -> Postings:
        """From one entry per (document, term): the document's position, the term, its (weighted) count.
        With a ``reference``, its collection statistics (document count, lengths, document frequencies)
        weigh the terms, so a small segment's scores compare with the reference's."""
        vocabulary: dict[str, int] = {}
        term_ids = np.fromiter(
            (vocabulary.setdefault(t, len(vocabulary)) for t in terms_of), dtype=np.int64, count=len(terms_of)
        )
        doc_of = np.asarray(doc_of, dtype=np.int64)
        tf = np.asarray(tf_of, dtype=np.float64)
        length = np.bincount(doc_of, weights=tf, minlength=n_docs)
        df = np.bincount(term_ids, minlength=len(vocabulary)).astype(np.float64)
        if reference is None:
            total = n_docs
            average = float(length[length > 0].mean()) if (length > 0).any() else 1.0
            df_used = df
        else:
            total, average = reference.n_docs + n_docs, reference.average_length
            df_used = df + np.asarray([reference.document_frequency(t) for t in vocabulary], dtype=np.float64)
        idf = np.log1p((total - df_used + 0.5) / (df_used + 0.5))
        weight = idf[term_ids] * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length[doc_of] / average))
        order = np.lexsort((doc_of, term_ids))
        indptr = np.zeros(len(vocabulary) + 1, dtype=np.int64)
        np.cumsum(np.bincount(term_ids, minlength=len(vocabulary)), out=indptr[1:])
        return cls(
            terms=vocabulary,
            indptr=indptr,
            docs=doc_of[order].astype(np.int32),
            weights=weight[order].astype(np.float32),
            n_docs=n_docs,
            df=df,
            average_length=average,
        )

    def document_frequency(self, term: str) -> float:
        t = self.terms.get(term)
        return 0.0 if t is None else float(self.df[t])

    def postings(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        t = self.terms.get(term)
        if t is None:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        lo, hi = self.indptr[t], self.indptr[t + 1]
        return self.docs[lo:hi], self.weights[lo:hi]

    def scores(self, positive: Sequence[str], negative: Sequence[str], *, match_all: bool) -> np.ndarray:
        """Dense BM25 scores over all documents: 0 where the document does not match (any word, or with
        ``match_all`` every word, as PostgreSQL's ``@@`` with an AND query), -inf where a negated word is."""
        out = np.zeros(self.n_docs, dtype=np.float32)
        terms = list(dict.fromkeys(positive))
        if match_all and any(t not in self.terms for t in terms):
            return out  # a word no document holds: none holds every word
        if match_all and len(terms) > 1:
            # Every word: walk the rarest word's documents and keep those the other lists hold (each
            # sorted), instead of adding every list into the dense array and counting (~5 ms for common
            # words at 1M details).
            lists = sorted((self.postings(t) for t in terms), key=lambda p: len(p[0]))
            docs, total = lists[0][0], lists[0][1].astype(np.float32)
            for other_docs, other_weights in lists[1:]:
                pos = np.minimum(np.searchsorted(other_docs, docs), len(other_docs) - 1)
                held = other_docs[pos] == docs
                docs, total = docs[held], total[held] + other_weights[pos[held]]
                if not len(docs):
                    break
            out[docs] = total
        else:
            for term in terms:
                docs, weights = self.postings(term)
                out[docs] += weights
        for term in negative:
            out[self.postings(term)[0]] = -np.inf
        return out


def top_positions(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k highest positive scores, best first, the lower position first among equal
    scores. Selects by a bound before sorting: ``argpartition`` over a million floats costs ~25 ms, a
    comparison ~0.3 ms."""
    k = int(k)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    positive = None
    if len(scores) > 64 * k:
        # A bound from a strided sample of the whole array, the value ~3k of all values reach. Collecting
        # every positive score first (a common word gives a third of a million details one) took 1.5-3.5
        # ms at 1M details.
        step = len(scores) // (16 * k)
        sample = scores[::step]
        rank = 3 * k // step + 1
        low = np.partition(sample, len(sample) - rank)[len(sample) - rank]
        if low > 0:
            positive = _best_reaching(scores, low, k)
    if positive is None:  # few positive scores (or an unlucky sample): all of them
        positive = np.flatnonzero(scores > 0)
    if len(positive) > k:
        values = scores[positive]
        threshold = np.partition(values, len(values) - k)[len(values) - k]
        above, tied = positive[values > threshold], positive[values == threshold]
        positive = np.concatenate([above, tied[: k - len(above)]])
    order = np.lexsort((positive, -scores[positive]))
    return positive[order]


def _best_reaching(scores: np.ndarray, low: float, k: int) -> np.ndarray | None:
    """The positions above ``low`` when there are k of them; else those and, of the positions at ``low``,
    the first ones, k in all; None when fewer than k reach it. BM25 scores tie by the thousand (documents
    of one length holding one common word): the ties are cut here instead of partitioned and sorted."""
    above = np.flatnonzero(scores > low)
    if len(above) >= k:
        return above
    tied = np.flatnonzero(scores == low)
    if len(above) + len(tied) < k:
        return None
    return np.concatenate([above, tied[: k - len(above)]])


@dataclass
class Segment:
    """One build: artworks and details, their ids and positions. A later segment overrides the artworks it
    holds in an earlier one."""

    artwork_ids: np.ndarray  # int64, sorted: position -> artwork id
    artworks: Postings
    detail_ids: np.ndarray  # int64: position -> detail id
    detail_artwork: np.ndarray  # int32: position -> artwork position
    detail_level: np.ndarray  # int8: LEVEL_CODES
    details: Postings
    artwork_notations: Postings  # ICONCLASS notation -> artwork positions tagged with it
    detail_notations: Postings  # ICONCLASS notation -> detail positions tagged with it

    def artwork_positions(self, ids: Iterable[int]) -> np.ndarray:
        """Positions of the given artwork ids held here (ids not held are dropped)."""
        wanted = np.asarray(sorted(set(ids)), dtype=np.int64)
        pos = np.searchsorted(self.artwork_ids, wanted)
        pos = pos[pos < len(self.artwork_ids)]
        return pos[np.isin(self.artwork_ids[pos], wanted)]

    def hits(
        self,
        positive: Sequence[str],
        negative: Sequence[str],
        *,
        level: str,
        allowed: np.ndarray | None,
        limit: int,
        match_all: bool = True,
    ) -> list[tuple[int, int | None, float]]:
        """(artwork id, best detail id or None, score), best first: an artwork's own document score plus its
        best detail's, as the PostgreSQL leg adds them. ``allowed`` masks artwork positions."""
        levels = [LEVEL_CODES[lv] for lv in detail_levels(level)]
        detail_scores = self.details.scores(positive, negative, match_all=match_all)
        keep = allowed[self.detail_artwork] if allowed is not None else None
        if len(levels) < len(DETAIL_LEVELS):
            at_level = np.isin(self.detail_level, levels)
            keep = at_level if keep is None else keep & at_level
        if keep is not None:
            detail_scores[~keep] = 0.0
        # Enough details that ``limit`` distinct artworks remain after keeping each one's best.
        top_details = top_positions(detail_scores, limit * 8)
        best: dict[int, tuple[int, float]] = {}
        for p in top_details.tolist():
            a = int(self.detail_artwork[p])
            if a not in best:
                best[a] = (p, float(detail_scores[p]))
        combined: dict[int, float] = {a: s for a, (_, s) in best.items()}
        if level == "artworks":
            artwork_scores = self.artworks.scores(positive, negative, match_all=match_all)
            if allowed is not None:
                artwork_scores[~allowed] = 0.0
            for a in top_positions(artwork_scores, limit * 2).tolist():
                combined[a] = combined.get(a, 0.0) + float(artwork_scores[a])
            if best:  # an artwork whose own text holds a negated word drops out
                held = np.fromiter(best, dtype=np.int64, count=len(best))
                for a in held[np.isneginf(artwork_scores[held])].tolist():
                    combined[a] = 0.0
        ranked = sorted(((s, a) for a, s in combined.items() if s > 0), key=lambda t: (-t[0], t[1]))[:limit]
        return [
            (
                int(self.artwork_ids[a]),
                int(self.detail_ids[best[a][0]]) if a in best else None,
                s,
            )
            for s, a in ranked
        ]

    def notation_hits(
        self,
        notations: Sequence[tuple[str, float]],
        *,
        level: str,
        allowed: np.ndarray | None,
        limit: int,
    ) -> list[tuple[int, int | None, float]]:
        """The ICONCLASS leg: artworks tagged (or with a detail tagged) with the notations, by the best
        notation's weight, then artwork id; the detail is the one with the best notation, as the
        PostgreSQL leg ranks them."""
        levels = [LEVEL_CODES[lv] for lv in detail_levels(level)]
        weights, artworks, details = [], [], []
        for code, weight in notations:
            if level == "artworks":
                found = self.artwork_notations.postings(code)[0]
                weights.append(np.full(len(found), weight))
                artworks.append(found.astype(np.int64))
                details.append(np.full(len(found), -1))
            found = self.detail_notations.postings(code)[0]
            if len(levels) < len(DETAIL_LEVELS):
                found = found[np.isin(self.detail_level[found], levels)]
            weights.append(np.full(len(found), weight))
            artworks.append(self.detail_artwork[found].astype(np.int64))
            details.append(found.astype(np.int64))
        if not weights:
            return []
        w, a, d = np.concatenate(weights), np.concatenate(artworks), np.concatenate(details)
        if allowed is not None:
            keep = allowed[a]
            w, a, d = w[keep], a[keep], d[keep]
        if not len(w):
            return []
        order = np.lexsort((a, -w))  # best weight first; within it, artwork order
        w, a, d = w[order], a[order], d[order]
        first = np.unique(a, return_index=True)[1]  # each artwork's best weight
        ranked = first[np.lexsort((a[first], -w[first]))][:limit]
        with_detail = np.flatnonzero(d >= 0)
        best_detail: dict[int, int] = {}
        if len(with_detail):
            firsts = with_detail[np.unique(a[with_detail], return_index=True)[1]]
            best_detail = dict(zip(a[firsts].tolist(), d[firsts].tolist(), strict=True))
        out: list[tuple[int, int | None, float]] = []
        for i in ranked.tolist():
            detail = best_detail.get(int(a[i]))
            out.append(
                (
                    int(self.artwork_ids[a[i]]),
                    int(self.detail_ids[detail]) if detail is not None else None,
                    float(w[i]),
                )
            )
        return out


def _artwork_rows(
    changed_since: float | None,
) -> tuple[list[int], list[int], list[str], list[float], list[list[str]]]:
    """(artwork ids, then one entry per (artwork, lexeme): artwork index, lexeme, weighted frequency;
    then each artwork's ICONCLASS notations)."""
    notations, texts = catalogue_notation_texts()
    case = " ".join(f"WHEN '{k}' THEN {v}" for k, v in FIELD_WEIGHTS.items())
    sql = (
        "WITH ic(notation, txt) AS (SELECT * FROM unnest(%(notations)s::text[], %(texts)s::text[])) "
        # LEFT JOIN: an artwork without words of its own still holds its details' words.
        "SELECT a.id, a.iconclass, coalesce(array_agg(u.lexeme) FILTER (WHERE u.lexeme IS NOT NULL), '{}'), "
        f"coalesce(array_agg((SELECT sum(CASE w::text {case} END) FROM unnest(u.weights) w)) "
        "FILTER (WHERE u.lexeme IS NOT NULL), '{}') "
        f"FROM collections_app_artwork a LEFT JOIN LATERAL unnest({_artwork_document_sql()}) u ON true "
        f"WHERE {_changed_where('a.id', changed_since)} GROUP BY a.id, a.iconclass ORDER BY a.id"
    )
    ids: list[int] = []
    doc_of: list[int] = []
    terms: list[str] = []
    tf: list[float] = []
    codes: list[list[str]] = []
    with connection.cursor() as cursor:
        cursor.execute(
            sql, {"notations": notations, "texts": texts, "cfg": TS_CONFIG, "since": changed_since}
        )
        for artwork_id, iconclass, lexemes, counts in cursor:
            doc_of.extend([len(ids)] * len(lexemes))
            ids.append(artwork_id)
            terms.extend(lexemes)
            tf.extend(float(c) for c in counts)
            codes.append(list(iconclass or []))
    return ids, doc_of, terms, tf, codes


def _membership(lists: Sequence[Sequence[str]]) -> Postings:
    """Term -> the positions whose list holds it (weights unused)."""
    doc_of = np.fromiter((i for i, terms in enumerate(lists) for _ in terms), dtype=np.int64)
    terms = [t for ts in lists for t in ts]
    return Postings.build(doc_of, terms, np.ones(len(terms)), len(lists))


def _changed_where(artwork_column: str, changed_since: float | None) -> str:
    """SQL: the artwork was created or edited, re-processed, had a detail or an artist edited, since then.
    ``%(since)s`` is a Unix time; None means every artwork."""
    if changed_since is None:
        return "true"
    since = "to_timestamp(%(since)s)"
    return (
        f"({artwork_column} IN (SELECT id FROM collections_app_artwork WHERE updated_at >= {since}) "
        f"OR {artwork_column} IN (SELECT artwork_id FROM collections_app_processingstep "
        f"WHERE finished_at >= {since}) "
        f"OR {artwork_column} IN (SELECT artwork_id FROM collections_app_detail WHERE updated_at >= {since}) "
        f"OR {artwork_column} IN (SELECT aa.artwork_id FROM collections_app_artwork_artists aa "
        f"JOIN collections_app_artist ar ON ar.id = aa.artist_id WHERE ar.updated_at >= {since}))"
    )


def build_segment(changed_since: float | None = None, *, reference: Segment | None = None) -> Segment:
    """Read the artworks (all, or those changed since a Unix time) and their visible details. A delta
    segment is weighed with its ``reference``'s statistics (``Postings.build``)."""
    ids, doc_of, terms, tf, artwork_codes = _artwork_rows(changed_since)
    artwork_ids = np.asarray(ids, dtype=np.int64)
    artworks = Postings.build(
        np.asarray(doc_of),
        terms,
        np.asarray(tf),
        len(ids),
        reference=reference.artworks if reference else None,
    )
    detail_ids: list[int] = []
    detail_artwork: list[int] = []
    detail_level: list[int] = []
    d_doc: list[int] = []
    d_terms: list[str] = []
    d_tf: list[float] = []
    detail_codes: list[list[str]] = []
    position = {a: i for i, a in enumerate(ids)}
    sql = (
        "SELECT d.id, d.artwork_id, d.level, d.iconclass, "
        "array(SELECT u.lexeme FROM unnest(t.v) u), "
        "array(SELECT cardinality(u.positions) FROM unnest(t.v) u) "
        f"FROM collections_app_detail d CROSS JOIN LATERAL (SELECT to_tsvector(%(cfg)s, {_DETAIL_TEXT}) v) t "
        f"WHERE d.review_state <> 'hidden' AND {_changed_where('d.artwork_id', changed_since)} "
        "ORDER BY d.artwork_id, d.id"
    )
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, {"cfg": TS_CONFIG, "since": changed_since})
        for detail_id, artwork_id, level, iconclass, lexemes, counts in cursor:
            a = position.get(artwork_id)
            if a is None or level not in LEVEL_CODES:
                continue  # created after the artworks were read: the next sync takes it
            d_doc.extend([len(detail_ids)] * len(lexemes))
            detail_ids.append(detail_id)
            detail_artwork.append(a)
            detail_level.append(LEVEL_CODES[level])
            d_terms.extend(lexemes)
            d_tf.extend(float(c) for c in counts)
            detail_codes.append(list(iconclass or []))
    details = Postings.build(
        np.asarray(d_doc),
        d_terms,
        np.asarray(d_tf),
        len(detail_ids),
        reference=reference.details if reference else None,
    )
    return Segment(
        artwork_ids=artwork_ids,
        artworks=artworks,
        detail_ids=np.asarray(detail_ids, dtype=np.int64),
        detail_artwork=np.asarray(detail_artwork, dtype=np.int32),
        detail_level=np.asarray(detail_level, dtype=np.int8),
        details=details,
        artwork_notations=_membership(artwork_codes),
        detail_notations=_membership(detail_codes),
    )


def _postings_arrays(prefix: str, p: Postings) -> dict[str, np.ndarray]:
    return {
        f"{prefix}_terms": np.asarray(json.dumps(list(p.terms))),
        f"{prefix}_indptr": p.indptr,
        f"{prefix}_docs": p.docs,
        f"{prefix}_weights": p.weights,
        f"{prefix}_n": np.asarray(p.n_docs),
        f"{prefix}_df": p.df,
        f"{prefix}_average_length": np.asarray(p.average_length),
    }


def _postings_from(data: dict[str, np.ndarray], prefix: str) -> Postings:
    terms = json.loads(str(data[f"{prefix}_terms"]))
    return Postings(
        terms={t: i for i, t in enumerate(terms)},
        indptr=data[f"{prefix}_indptr"],
        docs=data[f"{prefix}_docs"],
        weights=data[f"{prefix}_weights"],
        n_docs=int(data[f"{prefix}_n"]),
        df=data[f"{prefix}_df"],
        average_length=float(data[f"{prefix}_average_length"]),
    )


@dataclass
class WordIndex:
    """The saved build (``base``), the artworks changed since (``delta``), and when the base was read."""

    base: Segment
    built_at: float  # database clock, Unix time, at the start of the base's build
    delta: Segment | None = None
    base_dead: np.ndarray | None = None  # bool over base artwork positions: overridden by the delta
    vocabulary: Vocabulary | None = None  # built by the background upkeep (ensure_vocabulary)
    synced_writes: tuple[int, ...] | None = None  # the watched tables' write counters at the last sync

    def save(self, path: Path | None = None) -> Path:
        path = path or index_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        s = self.base
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # web processes may save at once
        arrays: dict[str, Any] = {
            "built_at": np.asarray(self.built_at),
            "artwork_ids": s.artwork_ids,
            "detail_ids": s.detail_ids,
            "detail_artwork": s.detail_artwork,
            "detail_level": s.detail_level,
            **_postings_arrays("artworks", s.artworks),
            **_postings_arrays("details", s.details),
            **_postings_arrays("artwork_notations", s.artwork_notations),
            **_postings_arrays("detail_notations", s.detail_notations),
        }
        np.savez(tmp, **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path | None = None) -> WordIndex | None:
        path = path or index_path()
        if not path.is_file():
            return None
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        base = Segment(
            artwork_ids=arrays["artwork_ids"],
            artworks=_postings_from(arrays, "artworks"),
            detail_ids=arrays["detail_ids"],
            detail_artwork=arrays["detail_artwork"],
            detail_level=arrays["detail_level"],
            details=_postings_from(arrays, "details"),
            artwork_notations=_postings_from(arrays, "artwork_notations"),
            detail_notations=_postings_from(arrays, "detail_notations"),
        )
        return cls(base=base, built_at=float(arrays["built_at"]))

    @staticmethod
    def saved_at(path: Path | None = None) -> float | None:
        """When the saved build was read from the database (Unix time), without loading it."""
        path = path or index_path()
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                return float(data["built_at"])
        except (OSError, KeyError, ValueError):
            return None

    @classmethod
    def rebuild(cls) -> WordIndex:
        started = _database_now()
        return cls(base=build_segment(), built_at=started)

    def sync(self) -> int:
        """Re-read every artwork changed since the base was built into the delta. Returns its artworks."""
        delta = build_segment(changed_since=self.built_at - SYNC_OVERLAP_S, reference=self.base)
        dead = np.zeros(len(self.base.artwork_ids), dtype=bool)
        dead[self.base.artwork_positions(delta.artwork_ids.tolist())] = True
        self.delta, self.base_dead = delta, dead  # swapped together: a search sees one or the other
        return len(delta.artwork_ids)

    def size(self) -> tuple[int, int]:
        """(artworks, details) in the base."""
        return len(self.base.artwork_ids), len(self.base.detail_ids)

    def knows(self, term: str) -> bool:
        segments = [self.base] + ([self.delta] if self.delta is not None else [])
        return any(term in s.artworks.terms or term in s.details.terms for s in segments)

    def ensure_vocabulary(self) -> Vocabulary:
        """The base's words by their trigrams. Building it takes ~0.3 s for 67k distinct words (the
        ICONCLASS texts in four languages, timed as a stand-in for a large catalogue's vocabulary): the
        background upkeep does it after a load, so that the first visitor with a misspelling does not wait."""
        if self.vocabulary is None:
            self.vocabulary = Vocabulary([*self.base.artworks.terms, *self.base.details.terms])
        return self.vocabulary

    def corrected(self, query: WordQuery) -> WordQuery | None:
        """The query with each word nothing holds replaced by the closest known word (dropped when none
        is close); None when nothing changed."""
        unknown = [t for t in query.positive if not self.knows(t)]
        if not unknown:
            return None
        vocabulary = self.ensure_vocabulary()
        positive = []
        for term in query.positive:
            if term in unknown:
                close = vocabulary.closest(term)
                if close is not None:
                    positive.append(close)
            else:
                positive.append(term)
        return dataclasses.replace(query, positive=positive) if positive else None

    def _segments(self, allowed_ids: np.ndarray | None) -> list[tuple[Segment, np.ndarray | None]]:
        """The segments to search with their artwork masks: the base without the artworks the delta
        holds again, then the delta."""
        delta, dead = self.delta, self.base_dead
        allowed = _mask(self.base, allowed_ids)
        if dead is not None and dead.any():
            allowed = ~dead if allowed is None else allowed & ~dead
        segments = [(self.base, allowed)]
        if delta is not None and len(delta.artwork_ids):
            segments.append((delta, _mask(delta, allowed_ids)))
        return segments

    def _merged(
        self,
        allowed_ids: np.ndarray | None,
        limit: int,
        segment_hits: Callable[[Segment, np.ndarray | None], list[tuple[int, int | None, float]]],
    ) -> list[tuple[int, int | None, float]]:
        """One leg's hits from every segment, best first, artwork id breaking ties."""
        hits = []
        for segment, mask in self._segments(allowed_ids):
            hits += segment_hits(segment, mask)
        hits.sort(key=lambda h: (-h[2], h[0]))
        return hits[:limit]

    def search(
        self, query: WordQuery, *, level: str, allowed_ids: np.ndarray | None, limit: int
    ) -> list[tuple[int, int | None, float]]:
        return self._merged(
            allowed_ids,
            limit,
            lambda segment, mask: segment.hits(
                query.positive,
                query.negative,
                level=level,
                allowed=mask,
                limit=limit,
                match_all=query.match_all,
            ),
        )

    def notation_search(
        self,
        notations: Sequence[tuple[str, float]],
        *,
        level: str,
        allowed_ids: np.ndarray | None,
        limit: int,
    ) -> list[tuple[int, int | None, float]]:
        return self._merged(
            allowed_ids,
            limit,
            lambda segment, mask: segment.notation_hits(notations, level=level, allowed=mask, limit=limit),
        )


def _mask(segment: Segment, allowed_ids: np.ndarray | None) -> np.ndarray | None:
    if allowed_ids is None:
        return None
    mask = np.zeros(len(segment.artwork_ids), dtype=bool)
    mask[segment.artwork_positions(allowed_ids.tolist())] = True
    return mask


def _database_now() -> float:
    with connection.cursor() as cursor:
        cursor.execute("SELECT extract(epoch FROM now())")
        return float(cursor.fetchone()[0])


@dataclass(frozen=True)
class WordQuery:
    positive: list[str]
    negative: list[str]
    match_all: bool  # False when the query says "or"


@functools.lru_cache(maxsize=4096)
def query_lexemes(text: str) -> WordQuery:
    """A websearch query's words and negated words, as PostgreSQL's English configuration stems them.
    Phrases count as their words (the index keeps no positions)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT websearch_to_tsquery(%s, %s)::text", [TS_CONFIG, text])
        tsquery = cursor.fetchone()[0] or ""
    positive: list[str] = []
    negative: list[str] = []
    for bang, lexeme in _QUERY_LEXEME.findall(tsquery):
        (negative if bang else positive).append(lexeme.replace("''", "'"))
    return WordQuery(positive=positive, negative=negative, match_all=" | " not in tsquery)


def trigrams(word: str) -> set[str]:
    """pg_trgm's trigrams of one word: padded with two spaces before and one after."""
    padded = f"  {word.lower()} "
    return {padded[i : i + 3] for i in range(len(padded) - 2)}


class Vocabulary:
    """The index's words by their trigrams, to correct a query word nothing holds ("studdy" -> "studi"):
    the in-memory counterpart of the PostgreSQL leg's trigram fallback, which took 0.15-0.9 s a query at
    1M details."""

    def __init__(self, terms: Iterable[str]) -> None:
        self.terms = sorted(set(terms))
        self.sizes = np.array([len(trigrams(t)) for t in self.terms], dtype=np.int32)
        by_trigram: dict[str, list[int]] = {}
        for i, term in enumerate(self.terms):
            for gram in trigrams(term):
                by_trigram.setdefault(gram, []).append(i)
        self.by_trigram = {g: np.asarray(ids, dtype=np.int32) for g, ids in by_trigram.items()}

    def closest(self, word: str, *, minimum: float = FUZZY_MIN_SIMILARITY) -> str | None:
        """The known word most similar to ``word`` (trigram similarity, as pg_trgm's ``similarity``)."""
        grams = trigrams(word)
        lists = [self.by_trigram[g] for g in grams if g in self.by_trigram]
        if not lists:
            return None
        candidates, shared = np.unique(np.concatenate(lists), return_counts=True)
        similarity = shared / (len(grams) + self.sizes[candidates] - shared)
        best = int(np.argmax(similarity))
        return self.terms[candidates[best]] if similarity[best] >= minimum else None


# --- The process's index and its background upkeep -------------------------------------------------------

_state_lock = threading.Lock()
_index: WordIndex | None = None
_loaded = False
_synced_at = 0.0
_worker: threading.Thread | None = None


def current_index() -> WordIndex | None:
    """The process's index, loaded from disk on first use; a background sync when it is due. None until a
    build has been saved (``manage.py search_index rebuild``)."""
    global _index, _loaded, _synced_at, _worker
    with _state_lock:
        due = time.monotonic() - _synced_at > SYNC_EVERY_S
        if not _loaded or (_index is None and due):  # look again for a file saved since
            _index, _loaded = WordIndex.load(), True
            _synced_at = 0.0 if _index is not None else time.monotonic()  # loaded: a sync is due
            if _index is None:
                logger.warning(
                    "no word index at %s: the word legs run in PostgreSQL until `manage.py search_index "
                    "rebuild` saves one",
                    index_path(),
                )
            due = time.monotonic() - _synced_at > SYNC_EVERY_S
        if _index is not None and due and (_worker is None or not _worker.is_alive()):
            _synced_at = time.monotonic()
            _worker = threading.Thread(target=_upkeep, args=(_index,), name="word-index-sync", daemon=True)
            _worker.start()
        return _index


# A sync finds changed artworks by their (unindexed) timestamps in these tables: at 1M details that scan
# took ~0.1 s of the database's time every SYNC_EVERY_S in each web process. It is skipped while
# PostgreSQL's write counters for all of them stand still (a commit is counted within ~1-10 s; the
# counters are read before the rows, so a write the sync did not see moves them for the next one).
WATCHED_TABLES = (
    "collections_app_artwork",
    "collections_app_detail",
    "collections_app_processingstep",
    "collections_app_artist",
    "collections_app_artwork_artists",
)


def _upkeep(index: WordIndex) -> None:
    """Sync the delta; rebuild and save when the delta has grown too large. Runs on its own connection."""
    try:
        upkeep_once(index)
    except Exception:  # the searches carry on with the index they have; the next sync tries again
        logger.exception("word index sync failed")
    finally:
        connection.close()


def upkeep_once(index: WordIndex) -> None:
    global _index
    saved = WordIndex.saved_at()
    if saved is not None and saved > index.built_at:  # `search_index rebuild`, or another process
        fresh = WordIndex.load()
        if fresh is not None:
            fresh.ensure_vocabulary()  # before searches see it
            with _state_lock:
                _index = fresh
            index = fresh
    index.ensure_vocabulary()  # once, for the index kept (a no-op for a fresh one)
    writes = table_writes(WATCHED_TABLES)
    if writes is not None and writes == index.synced_writes:
        return  # nothing written since the last sync: its delta stands
    changed = index.sync()
    index.synced_writes = writes
    artworks, _ = index.size()
    if changed > REBUILD_FRACTION * max(artworks, 1):
        fresh = WordIndex.rebuild()
        fresh.save()
        fresh.ensure_vocabulary()
        with _state_lock:
            _index = fresh
        logger.info("word index rebuilt: %d artworks had changed since the last build", changed)


def reset() -> None:
    """Forget the loaded index (tests; after ``search_index rebuild`` in this process)."""
    global _index, _loaded, _synced_at
    with _state_lock:
        _index, _loaded, _synced_at = None, False, 0.0


def rebuild_and_save() -> WordIndex:
    global _index, _loaded, _synced_at
    index = WordIndex.rebuild()
    index.save()
    with _state_lock:
        _index, _loaded, _synced_at = index, True, time.monotonic()
    return index


def memory_lexical_leg(
    *,
    text: str,
    level: str = "artworks",
    filters: SearchFilters = NO_FILTERS,
    limit: int,
) -> list[LegHit] | None:
    """The full-text leg from the in-memory index, checked against the database. None when no index has
    been built yet: the caller uses the PostgreSQL leg."""
    index = current_index()
    if index is None:
        return None
    query = query_lexemes(text)
    if not query.positive:
        return []
    allowed = _allowed_artworks(filters)
    # A few more than asked: hits the database no longer shows are dropped below.
    found = index.search(query, level=level, allowed_ids=allowed, limit=int(limit) + 8)
    if not found:
        # Words nothing holds (misspellings): the closest known words instead.
        corrected = index.corrected(query)
        if corrected is not None:
            query = corrected
            found = index.search(query, level=level, allowed_ids=allowed, limit=int(limit) + 8)
    if not found and query.match_all and len(set(query.positive)) > 1:
        # No document holds every word (long natural-language queries): rank those holding any.
        relaxed = dataclasses.replace(query, match_all=False)
        found = index.search(relaxed, level=level, allowed_ids=allowed, limit=int(limit) + 8)
    return _visible(found)[: int(limit)]


def memory_iconclass_leg(
    *,
    notations: Sequence[tuple[str, float]],
    level: str = "artworks",
    filters: SearchFilters = NO_FILTERS,
    limit: int,
) -> list[LegHit] | None:
    """The ICONCLASS leg from the in-memory index (the PostgreSQL leg aggregates every tagged row: ~0.2 s
    at 1M details when a notation tags a third of the collection). None when no index is built yet."""
    index = current_index()
    if index is None:
        return None
    if not notations:
        return []
    found = index.notation_search(
        notations, level=level, allowed_ids=_allowed_artworks(filters), limit=int(limit) + 8
    )
    return _visible(found)[: int(limit)]


def _allowed_artworks(filters: SearchFilters) -> np.ndarray | None:
    filter_sql, params = _filter_sql(filters, "a.id")
    if not filter_sql:
        return None
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT a.id FROM collections_app_artwork a WHERE true{filter_sql}", params)  # type: ignore[arg-type]
        return np.asarray([r[0] for r in cursor.fetchall()], dtype=np.int64)


def _visible(found: list[tuple[int, int | None, float]]) -> list[LegHit]:
    """Hits as leg hits, a detail hidden since the build losing its region (its artwork keeps its own
    score). Artworks deleted since the build are dropped by the pipeline (``pipeline.present``), once for
    every leg."""
    hidden = set(hidden_details().tolist()) if any(d is not None for _, d, _ in found) else set()
    return [LegHit(artwork_id=a, detail_id=None if d in hidden else d, score=s) for a, d, s in found]
