"""FAISS as the alternative vector index (``SEARCH["index"] = "faiss"``), for collections where pgvector's
HNSW recall falls off (FINDINGS: recall@10 0.83-0.88 at 1M vectors; FAISS IVF ~1 ms at recall ~1.0).

One index per (target, model, kind, dimension), keyed by the embedding rows' primary keys, saved under
``SEMART_DATA_DIR/indexes/faiss``. Kept in step incrementally: before a search, rows added since the last
sync are added and deleted rows removed (at most every ``SYNC_EVERY_S`` per process, on a background
thread); ``manage.py search_index rebuild`` starts over. Filters stay inside the search: the allowed rows go
to FAISS as an ``IDSelectorBatch``. Flat (exact inner product) below ``IVF_FROM`` vectors, IVF above
(``SEARCH["faiss_nprobe"]`` lists searched), on the GPU when ``SEARCH["faiss_gpu"]`` is set and faiss was
built with it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection

from search_app.retrieval import DETAIL_LEVELS, NO_FILTERS, LegHit, _filter_sql, halfvec_rows
from search_app.types import SearchFilters

logger = logging.getLogger(__name__)

TABLES = {"artwork": "collections_app_artworkembedding", "detail": "collections_app_detailembedding"}
# Exact search reads every vector (bandwidth-bound: 100k x 384 float32 took 14-16 ms a query here); IVF
# reads the lists it probes.
IVF_FROM = 50_000
TRAIN_POINTS_PER_LIST = 64
SYNC_EVERY_S = 5.0
# Off in tests: a thread's own database connection would not see the rows of a test's transaction.
SYNC_IN_BACKGROUND = True
FULL_COMPARE_EVERY_S = 3600.0
_lock = threading.Lock()


def _faiss() -> Any:
    import faiss  # only where the FAISS index is chosen

    return faiss


def nprobe() -> int:
    """IVF lists searched per query (``SEARCH["faiss_nprobe"]``): recall against time, docs/benchmarks.md."""
    return int(settings.SEARCH.get("faiss_nprobe", 256))


def index_dir() -> Path:
    return Path(settings.SEMART_DATA_DIR) / "indexes" / "faiss"


@dataclass
class VectorIndex:
    target: str
    model_key: str
    kind: str
    dim: int
    index: Any = None
    ids: set[int] = field(default_factory=set)
    synced_at: float = 0.0
    # FAISS indexes are not safe to change while another thread searches them: searches and changes
    # take this lock (a search holds it ~1-3 ms at 1M vectors).
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    syncing: bool = False
    compared_at: float = 0.0
    highest: int = 0  # the highest id held: rows above it are new
    table_changes: tuple[int, int] | None = None  # the table's (inserted, deleted) counters at the last sync

    @property
    def name(self) -> str:
        import hashlib

        digest = hashlib.sha1(f"{self.target}:{self.model_key}:{self.kind}:{self.dim}".encode()).hexdigest()[
            :12
        ]
        return f"{self.target}-{digest}"

    def _ids_sql(self) -> tuple[str, list[object]]:
        """The ids of this index's rows (vectors are read by ``_fetch``, in binary)."""
        return (
            f"SELECT id FROM {TABLES[self.target]} WHERE model_key = %s AND kind = %s AND dim = %s",
            [self.model_key, self.kind, self.dim],
        )

    def _new_index(self, n: int) -> Any:
        faiss = _faiss()
        if n < IVF_FROM:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        else:
            nlist = int(4 * math.sqrt(n))
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.nprobe = nprobe()
        return _on_device(index)

    def _fetch(self, only_ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Ids and unit vectors of the rows (all, or ``only_ids``), read in PostgreSQL's binary format
        (parsing 1M vectors from text took ~1.5 min)."""
        from collections_app.models import ArtworkEmbedding, DetailEmbedding

        model = ArtworkEmbedding if self.target == "artwork" else DetailEmbedding
        rows = model.objects.filter(model_key=self.model_key, kind=self.kind, dim=self.dim)
        if only_ids is not None:
            rows = rows.filter(id__in=list(only_ids))
        found = halfvec_rows(rows.order_by(), "id")
        if not found:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)
        ids = np.fromiter((r[0] for r in found), dtype=np.int64, count=len(found))
        vectors = np.stack([r[1] for r in found])
        del found
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return ids, vectors

    def rebuild(self) -> int:
        ids, vectors = self._fetch()
        index = self._new_index(len(ids))
        if len(ids) and hasattr(index, "is_trained") and not index.is_trained:
            # k-means on a sample, as FAISS itself advises (~40-256 points a list): on all of 1M vectors
            # the training took 6 min on 2 cores.
            sample = min(len(ids), TRAIN_POINTS_PER_LIST * index.nlist)
            pick = np.random.default_rng(0).choice(len(ids), size=sample, replace=False)
            index.train(vectors[np.sort(pick)])
        if len(ids):
            index.add_with_ids(vectors, ids)
        self.index, self.ids = index, set(ids.tolist())
        self.highest = int(ids.max()) if len(ids) else 0
        self.synced_at = self.compared_at = time.monotonic()
        return len(ids)

    def sync(self) -> tuple[int, int]:
        """Add rows created since the last sync, remove rows deleted since. Returns (added, removed).

        Nothing is read when PostgreSQL's counters say the table saw no insert or delete since the last
        sync (``_table_changes``: counting 1M rows every 5 s cost ~40 ms of database a kind). Otherwise
        cheap when nothing was deleted: rows above the highest id held are added, and a count tells whether
        any row arrived below it (a transaction committing late); only on a deletion, a disagreeing count,
        or every ``FULL_COMPARE_EVERY_S``, are all ids compared: at 1M rows that read costs ~0.5 s."""
        if self.index is None:
            return self.rebuild(), 0
        changes = _table_changes(TABLES[self.target])
        compare = time.monotonic() - self.compared_at > FULL_COMPARE_EVERY_S
        if changes is not None and changes == self.table_changes and not compare:
            self.synced_at = time.monotonic()  # nothing inserted or deleted in the table: no row to read
            return 0, 0
        id_sql, params = self._ids_sql()
        with connection.cursor() as cursor:
            cursor.execute(id_sql + " AND id > %s", [*params, self.highest])
            above = {r[0] for r in cursor.fetchall()}
            cursor.execute(id_sql.replace("SELECT id", "SELECT count(*)", 1), params)
            total = int(cursor.fetchone()[0])
            deleted = (
                changes is not None and self.table_changes is not None and changes[1] != self.table_changes[1]
            )
            if total == len(self.ids) + len(above) and not compare and not deleted:
                # No set arithmetic over the million ids held: a sync runs beside the searches, and
                # Python work here holds the interpreter they need.
                gone, new = set(), above
            else:
                cursor.execute(id_sql, params)
                current = {r[0] for r in cursor.fetchall()}
                self.compared_at = time.monotonic()
                gone, new = self.ids - current, current - self.ids
        if not gone and not new:
            self.table_changes = changes
            self.synced_at = time.monotonic()
            return 0, 0
        ids, vectors = self._fetch(sorted(new)) if new else (None, None)
        with self.lock:
            if gone:
                self.index.remove_ids(np.asarray(sorted(gone), dtype=np.int64))
            if new:
                self.index.add_with_ids(vectors, ids)
            self.ids -= gone  # in place: copying a million ids would hold the interpreter
            self.ids |= new
            self.highest = max(self.highest, max(new, default=0))
        self.table_changes = changes  # only once applied: a failed sync is tried again in full
        self.synced_at = time.monotonic()
        return len(new), len(gone)

    def save(self) -> Path:
        """The index and the embedding ids it holds (an IVF index keeps them only inside its lists)."""
        faiss = _faiss()
        index_dir().mkdir(parents=True, exist_ok=True)
        path = index_dir() / f"{self.name}.faiss"
        cpu = (
            faiss.index_gpu_to_cpu(self.index)
            if hasattr(faiss, "index_gpu_to_cpu") and "Gpu" in type(self.index).__name__
            else self.index
        )
        faiss.write_index(cpu, str(path) + ".tmp")
        with open(str(path) + ".ids.tmp", "wb") as out:
            np.save(out, np.asarray(sorted(self.ids), dtype=np.int64))
        Path(str(path) + ".ids.tmp").replace(str(path) + ".ids")
        Path(str(path) + ".tmp").replace(path)
        return path

    def load(self) -> bool:
        path = index_dir() / f"{self.name}.faiss"
        ids_path = Path(str(path) + ".ids")
        if not path.is_file() or not ids_path.is_file():
            return False
        index = _faiss().read_index(str(path))
        ids = np.load(ids_path)
        if index.ntotal != len(ids):  # written by different saves: build again
            logger.warning("FAISS index %s and its id list disagree: rebuilding", path)
            return False
        self.index = _on_device(index)
        self.ids = set(ids.tolist())
        self.highest = int(ids.max()) if len(ids) else 0
        self.synced_at = self.compared_at = 0.0  # a sync is due at once
        return True


def _table_changes(table: str) -> tuple[int, int] | None:
    """(rows inserted, rows deleted) in the table as PostgreSQL counts them: its statistics, committed
    (flushed within ~1-10 s of a commit) plus this transaction's own. None where statistics are off."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('track_counts') = 'on', "
            "pg_stat_get_tuples_inserted(c.oid) + pg_stat_get_xact_tuples_inserted(c.oid), "
            "pg_stat_get_tuples_deleted(c.oid) + pg_stat_get_xact_tuples_deleted(c.oid) "
            "FROM pg_class c WHERE c.oid = %s::regclass",
            [table],
        )
        on, inserted, deleted = cursor.fetchone()
    return (int(inserted), int(deleted)) if on else None


def _on_device(index: Any) -> Any:
    faiss = _faiss()
    if settings.SEARCH.get("faiss_gpu") and hasattr(faiss, "StandardGpuResources"):
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    return index


_indexes: dict[tuple[str, str, str, int], VectorIndex] = {}


def get_index(*, target: str, model_key: str, kind: str, dim: int) -> VectorIndex:
    """The process's index for these vectors: loaded from its file, else built (in this request: build
    saved indexes of large collections beforehand with ``search_index rebuild``). When a sync is due it
    runs on a background thread while searches go on with the index as it is."""
    key = (target, model_key, kind, dim)
    with _lock:
        vi = _indexes.get(key)
        if vi is None:
            vi = _indexes[key] = VectorIndex(target=target, model_key=model_key, kind=kind, dim=dim)
            vi.load()
        due = time.monotonic() - vi.synced_at > SYNC_EVERY_S
        if vi.index is None or (due and not SYNC_IN_BACKGROUND):
            vi.sync()
        elif due and not vi.syncing:
            vi.syncing, vi.synced_at = True, time.monotonic()
            threading.Thread(target=_background_sync, args=(vi,), name="faiss-sync", daemon=True).start()
    return vi


def _background_sync(vi: VectorIndex) -> None:
    try:
        vi.sync()
    except Exception:  # searches go on with the index as it is; the next sync tries again
        logger.exception("FAISS index sync failed for %s", vi.name)
    finally:
        vi.syncing = False
        connection.close()  # this thread's own connection


def faiss_leg(
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
    """Same answer shape as ``retrieval.vector_leg``, from FAISS; filters through an id selector."""
    faiss = _faiss()
    q = np.asarray(vector, dtype=np.float32).reshape(1, -1)
    q /= max(float(np.linalg.norm(q)), 1e-12)
    vi = get_index(target=target, model_key=model_key, kind=kind, dim=q.shape[1])
    if vi.index is None or vi.index.ntotal == 0:
        return []
    allowed = _allowed_rows(
        target=target,
        model_key=model_key,
        kind=kind,
        dim=q.shape[1],
        levels=levels,
        filters=filters,
        exclude_artwork_id=exclude_artwork_id,
    )
    if allowed is not None and not len(allowed):
        return []
    selector = faiss.IDSelectorBatch(allowed) if allowed is not None else None
    if "IVF" in type(vi.index).__name__:
        params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe())
    else:
        params = faiss.SearchParameters(sel=selector) if selector is not None else None
    # Hidden details are dropped after the search (a selector over every visible row would cost a scan),
    # so ask for a few more.
    wanted = int(limit) + (int(limit) // 5 + 8 if target == "detail" else 0)
    with vi.lock:
        scores, ids = vi.index.search(q, wanted, params=params)
    found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
    if not found:
        return []
    if target == "artwork":
        sql = f"SELECT e.id, e.artwork_id, NULL::bigint FROM {TABLES[target]} e WHERE e.id = ANY(%s)"
    else:
        sql = (
            f"SELECT e.id, e.artwork_id, e.detail_id FROM {TABLES[target]} e JOIN collections_app_detail d "
            "ON d.id = e.detail_id WHERE e.id = ANY(%s) AND d.review_state <> 'hidden'"
        )
    with connection.cursor() as cursor:
        cursor.execute(sql, [[i for i, _ in found]])
        rows = {r[0]: (r[1], r[2]) for r in cursor.fetchall()}
    hits = [LegHit(artwork_id=rows[i][0], detail_id=rows[i][1], score=s) for i, s in found if i in rows]
    return hits[: int(limit)]


def _allowed_rows(
    *,
    target: str,
    model_key: str,
    kind: str,
    dim: int,
    levels: Sequence[str],
    filters: SearchFilters,
    exclude_artwork_id: int | None,
) -> np.ndarray | None:
    """Embedding row ids the filters allow; None when nothing is filtered (search everything)."""
    where, params = [], []
    if target == "detail" and set(levels) != set(DETAIL_LEVELS):
        where.append("e.level = ANY(%s)")
        params.append(list(levels))
    if exclude_artwork_id is not None:
        where.append("e.artwork_id <> %s")
        params.append(exclude_artwork_id)
    filter_sql, filter_params = _filter_sql(filters, "e.artwork_id")
    if not where and not filter_sql:
        return None
    sql = (
        f"SELECT e.id FROM {TABLES[target]} e WHERE e.model_key = %s AND e.kind = %s AND e.dim = %s"
        + "".join(f" AND {w}" for w in where)
        + filter_sql
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [model_key, kind, dim, *params, *filter_params])
        return np.asarray([r[0] for r in cursor.fetchall()], dtype=np.int64)


def rebuild_all() -> list[tuple[str, int, Path]]:
    """Every (target, model, kind, dim) present in the database, rebuilt and saved."""
    out = []
    for target, table in TABLES.items():
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT DISTINCT model_key, kind, dim FROM {table}")
            combos = cursor.fetchall()
        for model_key, kind, dim in combos:
            vi = VectorIndex(target=target, model_key=model_key, kind=kind, dim=int(dim))
            n = vi.rebuild()
            path = vi.save()
            with _lock:
                _indexes[(target, model_key, kind, int(dim))] = vi
            out.append((f"{target} {model_key} {kind} {dim}", n, path))
    return out
