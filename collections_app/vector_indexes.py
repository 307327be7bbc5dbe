"""Partial HNSW indexes, one per (table, model, kind, dimension).

A halfvec column without a fixed dimension cannot carry an HNSW index itself; an expression index over
``vector::halfvec(dim)`` restricted to one model's rows can, and a query that repeats the same cast and
predicate uses it. Indexes are made when a model first stores vectors (and by ``manage.py vector_indexes``).
"""

from __future__ import annotations

import hashlib
import re

from django.db import connection

TABLES = {"artwork": "collections_app_artworkembedding", "detail": "collections_app_detailembedding"}
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64


def index_name(table: str, model_key: str, kind: str, dim: int) -> str:
    digest = hashlib.sha1(f"{model_key}:{kind}:{dim}".encode()).hexdigest()[:10]
    return f"{table}_hnsw_{digest}"


def ensure_hnsw_index(*, target: str, model_key: str, kind: str, dim: int) -> str:
    """Create the partial HNSW cosine index for one model's vectors if it is missing; returns its name."""
    if not re.fullmatch(r"[\w.:@+-]{1,120}", model_key) or kind not in ("image", "text"):
        raise ValueError(f"refusing odd model key or kind: {model_key!r} {kind!r}")
    table = TABLES[target]
    name = index_name(target, model_key, kind, dim)
    # DDL takes no parameters; model_key and kind were checked above, so quoting them is safe.
    with connection.cursor() as cursor:
        # Two workers storing a new model's first vectors create the same index: without the lock, the
        # second's IF NOT EXISTS waits on the first's uncommitted catalogue row and then fails on it. Held
        # to the end of the caller's transaction (in autocommit, of this statement only).
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [name])
        cursor.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON {table} USING hnsw "
            f"((vector::halfvec({int(dim)})) halfvec_cosine_ops) "
            f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION}) "
            f"WHERE model_key = '{model_key}' AND kind = '{kind}' AND dim = {int(dim)}"
        )
    return name
