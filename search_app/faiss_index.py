"""FAISS as the alternative vector index (``SEARCH["index"] = "faiss"``), for collections where pgvector's
HNSW recall falls off (FINDINGS: recall@10 0.83-0.88 at 1M vectors; FAISS IVF ~1 ms at recall ~1.0).

One index per (target, model, kind, dimension), keyed by the embedding rows' primary keys, saved under
``SEMART_DATA_DIR/indexes/faiss``. Kept in step incrementally: before a search, rows added since the last
sync are added and deleted rows removed (at most every ``SYNC_EVERY_S`` per process, on a background
thread); ``manage.py search_index rebuild`` starts over. Filters stay inside the search: the allowed rows go
to FAISS as an ``IDSelectorBatch``. Flat (exact inner product) below ``IVF_FROM`` vectors, IVF above
(``SEARCH["faiss_nprobe"]`` lists searched, ``faiss_nprobe_text`` for caption vectors), on the GPU when
``SEARCH["faiss_gpu"]`` is set and faiss was built with it.
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
import psycopg
from django.conf import settings
from django.db import connection

from search_app.retrieval import (
    DETAIL_LEVELS,
    NO_FILTERS,
    LegHit,
    _filter_sql,
    halfvec_rows,
    hidden_details,
    table_writes,
)
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


def nprobe(kind: str = "image") -> int:
    """IVF lists searched per query: recall against time (docs/benchmarks.md). Caption vectors
    (``SEARCH["faiss_nprobe_text"]``) reach the same recall with fewer than image vectors
    (``SEARCH["faiss_nprobe"]``): at 1M, 0.975 at 128 against the crops' 0.967 at 256."""
    if kind == "text":
        return int(settings.SEARCH.get("faiss_nprobe_text", 128))
    return int(settings.SEARCH.get("faiss_nprobe", 256))


def codec() -> str:
    """How an IVF index stores its vectors (``SEARCH["faiss_codec"]``): ``sq8``, a byte a dimension (a
    quarter of float32's memory and scan, recall@10 0.967 against 0.980 at 1M crops, nprobe 256), or
    ``flat`` (float32)."""
    return str(settings.SEARCH.get("faiss_codec", "sq8"))


def _codec_of(index: Any) -> str:
    return "sq8" if "ScalarQuantizer" in type(index).__name__ else "flat"


def index_dir() -> Path:
    return Path(settings.SEMART_DATA_DIR) / "indexes" / "faiss"


@dataclass(frozen=True)
class Owners:
    """The artwork and detail of each embedding row an index holds, sorted by row id: a hit is looked up
    here, not in the database (a row never changes owner; a deleted one leaves at the next sync, and the
    pipeline checks what it shows, ``pipeline.present``). Arrays rather than a set of a million Python ints
    (~60 MB a kind, and set arithmetic that holds the interpreter the searches need)."""

    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    artworks: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    details: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # -1: no detail

    @classmethod
    def of(cls, ids: np.ndarray, artworks: np.ndarray, details: np.ndarray | None = None) -> Owners:
        ids = np.asarray(ids, dtype=np.int64)
        artworks = np.asarray(artworks, dtype=np.int64)
        details = np.full(len(ids), -1, dtype=np.int64) if details is None else np.asarray(details, np.int64)
        if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
            # New rows usually come above the highest id held, and then nothing moves: a sort of a million
            # ids at every sync would hold the interpreter beside the searches.
            order = np.argsort(ids, kind="stable")
            ids, artworks, details = ids[order], artworks[order], details[order]
        return cls(ids=ids, artworks=artworks, details=details)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def highest(self) -> int:
        return int(self.ids[-1]) if len(self.ids) else 0

    def changed(self, *, gone: np.ndarray, new: Owners) -> Owners:
        keep = ~np.isin(self.ids, gone) if len(gone) else np.ones(len(self.ids), dtype=bool)
        return Owners.of(
            np.concatenate([self.ids[keep], new.ids]),
            np.concatenate([self.artworks[keep], new.artworks]),
            np.concatenate([self.details[keep], new.details]),
        )

    def find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions, known): where each id is held, and whether it is."""
        pos = np.minimum(np.searchsorted(self.ids, ids), max(len(self.ids) - 1, 0))
        known = self.ids[pos] == ids if len(self.ids) else np.zeros(len(ids), dtype=bool)
        return pos, known

    def save(self, path: Path) -> None:
        with open(path, "wb") as out:
            np.savez(out, ids=self.ids, artworks=self.artworks, details=self.details)

    @classmethod
    def load(cls, path: Path) -> Owners:
        with np.load(path) as saved:
            return cls(ids=saved["ids"], artworks=saved["artworks"], details=saved["details"])


@dataclass
class VectorIndex:
    target: str
    model_key: str
    kind: str
    dim: int
    index: Any = None
    owners: Owners = field(default_factory=Owners)
    synced_at: float = 0.0
    # FAISS indexes are not safe to change while another thread searches them: searches and changes
    # take this lock (a search holds it ~1-3 ms at 1M vectors).
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    syncing: bool = False
    compared_at: float = 0.0
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
            if codec() == "sq8":
                index = faiss.IndexIVFScalarQuantizer(
                    quantizer, self.dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
                )
            else:
                index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.nprobe = nprobe(self.kind)
        return _on_device(index)

    def _owner_fields(self) -> tuple[str, ...]:
        return ("artwork_id", "detail_id") if self.target == "detail" else ("artwork_id",)

    def _fetch(self, only_ids: Sequence[int] | None = None) -> tuple[Owners, np.ndarray]:
        """The rows' owners and unit vectors (all rows, or ``only_ids``), read in PostgreSQL's binary
        format (parsing 1M vectors from text took ~1.5 min)."""
        from collections_app.models import ArtworkEmbedding, DetailEmbedding

        model = ArtworkEmbedding if self.target == "artwork" else DetailEmbedding
        rows = model.objects.filter(model_key=self.model_key, kind=self.kind, dim=self.dim)
        if only_ids is not None:
            rows = rows.filter(id__in=list(only_ids))
        found = halfvec_rows(rows.order_by("id"), "id", *self._owner_fields())
        if not found:
            return Owners(), np.zeros((0, self.dim), dtype=np.float32)
        columns = [np.fromiter((r[i] for r in found), dtype=np.int64, count=len(found)) for i in (0, 1)]
        if self.target == "detail":
            columns.append(np.fromiter((r[2] for r in found), dtype=np.int64, count=len(found)))
        vectors = np.stack([r[-1] for r in found])
        del found
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return Owners.of(*columns), vectors  # read in id order, as Owners keeps them

    def rebuild(self) -> int:
        owners, vectors = self._fetch()
        index = self._new_index(len(owners))
        if len(owners) and hasattr(index, "is_trained") and not index.is_trained:
            # k-means on a sample, as FAISS itself advises (~40-256 points a list): on all of 1M vectors
            # the training took 6 min on 2 cores.
            sample = min(len(owners), TRAIN_POINTS_PER_LIST * index.nlist)
            pick = np.random.default_rng(0).choice(len(owners), size=sample, replace=False)
            index.train(vectors[np.sort(pick)])
        if len(owners):
            index.add_with_ids(vectors, owners.ids)
        self.index, self.owners = index, owners
        self.synced_at = self.compared_at = time.monotonic()
        return len(owners)

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
        held = self.owners
        id_sql, params = self._ids_sql()
        above = _id_column(id_sql + " AND id > %s", [*params, held.highest])
        with connection.cursor() as cursor:
            cursor.execute(id_sql.replace("SELECT id", "SELECT count(*)", 1), params)
            total = int(cursor.fetchone()[0])
        deleted = (
            changes is not None and self.table_changes is not None and changes[1] != self.table_changes[1]
        )
        if total == len(held) + len(above) and not compare and not deleted:
            gone, new = np.zeros(0, dtype=np.int64), above
        else:
            current = _id_column(id_sql, params)
            self.compared_at = time.monotonic()
            gone, new = np.setdiff1d(held.ids, current), np.setdiff1d(current, held.ids)
        if not len(gone) and not len(new):
            self.table_changes = changes
            self.synced_at = time.monotonic()
            return 0, 0
        added, vectors = self._fetch(new.tolist()) if len(new) else (Owners(), None)
        owners = held.changed(gone=gone, new=added)
        with self.lock:
            if len(gone):
                self.index.remove_ids(gone)
            if len(added):
                self.index.add_with_ids(vectors, added.ids)
            self.owners = owners
        self.table_changes = changes  # only once applied: a failed sync is tried again in full
        self.synced_at = time.monotonic()
        return len(added), len(gone)

    def _paths(self) -> tuple[Path, Path]:
        path = index_dir() / f"{self.name}.faiss"
        return path, Path(str(path) + ".owners.npz")

    def save(self) -> Path:
        """The index and the owners of the rows it holds (an IVF index keeps the ids only inside its
        lists)."""
        faiss = _faiss()
        index_dir().mkdir(parents=True, exist_ok=True)
        path, owners_path = self._paths()
        cpu = (
            faiss.index_gpu_to_cpu(self.index)
            if hasattr(faiss, "index_gpu_to_cpu") and "Gpu" in type(self.index).__name__
            else self.index
        )
        faiss.write_index(cpu, str(path) + ".tmp")
        self.owners.save(Path(str(owners_path) + ".tmp"))
        Path(str(owners_path) + ".tmp").replace(owners_path)
        Path(str(path) + ".tmp").replace(path)
        return path

    def load(self) -> bool:
        path, owners_path = self._paths()
        if not path.is_file() or not owners_path.is_file():
            return False  # (indexes saved before 1 Dec 2026 kept only their ids: built again)
        index = _faiss().read_index(str(path))
        owners = Owners.load(owners_path)
        if index.ntotal != len(owners):  # written by different saves: build again
            logger.warning("FAISS index %s and its owners file disagree: rebuilding", path)
            return False
        if "IVF" in type(index).__name__ and _codec_of(index) != codec():
            logger.warning("FAISS index %s stores %s vectors, the settings ask %s: rebuilding", path,
                           _codec_of(index), codec())  # fmt: skip
            return False
        self.index = _on_device(index)
        self.owners = owners
        # A sync is due at once: it adds the rows written since the save, and its count tells whether any
        # was deleted (then it compares every id). Comparing every id at once, as it did, stalled the
        # searches of a web process that had just started by ~0.2 s.
        self.synced_at, self.compared_at = 0.0, time.monotonic()
        return True


def _table_changes(table: str) -> tuple[int, int] | None:
    """(rows inserted, rows deleted) in the table, from ``retrieval.table_writes``: updates do not change
    which rows an index holds. None where statistics are off."""
    writes = table_writes([table])
    return None if writes is None else (writes[0], writes[2])


_COPY_ROW = np.dtype([("fields", ">i2"), ("size", ">i4"), ("id", ">i8")])


def _id_column(sql: str, params: list[object]) -> np.ndarray:
    """The ids a ``SELECT id ...`` returns, read with ``COPY ... (FORMAT BINARY)`` straight into NumPy.
    Fetching a million rows as Python tuples held the interpreter lock for ~0.2 s while the web process's
    searches waited; here the process waits on the socket and parses in one vectorised step."""
    statement = "COPY (" + sql.replace("SELECT id", "SELECT id::bigint", 1) + ") TO STDOUT (FORMAT BINARY)"
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor, cursor.copy(statement, params) as copy:
        data = b"".join(bytes(block) for block in copy)
    # A 19-byte header, then per row: int16 field count, int32 size, int64 value; an int16 -1 trailer.
    rows = (len(data) - 21) // _COPY_ROW.itemsize
    return np.frombuffer(data, dtype=_COPY_ROW, count=rows, offset=19)["id"].astype(np.int64)


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
        params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe(kind))
    else:
        params = faiss.SearchParameters(sel=selector) if selector is not None else None
    # Hidden details are dropped after the search (a selector over every visible row would cost a scan),
    # so ask for a few more.
    wanted = int(limit) + (int(limit) // 5 + 8 if target == "detail" else 0)
    with vi.lock:
        scores, ids = vi.index.search(q, wanted, params=params)
        owners = vi.owners  # the owners of what this search saw
    keep = ids[0] >= 0
    found, scores = ids[0][keep], scores[0][keep]
    pos, known = owners.find(found)
    artworks, details = owners.artworks[pos], owners.details[pos]
    if target == "detail":
        known &= ~np.isin(details, hidden_details())
    return [
        LegHit(artwork_id=int(a), detail_id=int(d) if d >= 0 else None, score=float(s))
        for a, d, s in zip(artworks[known], details[known], scores[known], strict=True)
    ][: int(limit)]


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
