"""Fill a benchmark instance with N synthetic details whose vectors are clustered like real embeddings, build
the HNSW indexes, and print JSON with load and build times and sizes.

    SEMART_DATA_DIR=var/bench-scale/1m nice .venv/bin/python benchmarks/synthetic.py --details 1000000

Run it on an instance of its own (a fresh SEMART_DATA_DIR, embedded PostgreSQL, or a DATABASE_URL): it
refuses to touch an instance holding artworks that are not its own. Ten details per artwork (entity, group
and scene levels), each with an image (crop) and a text (caption) vector, as the pipeline stores them, and one
whole-image vector per artwork; labels, captions, titles and ICONCLASS notations are drawn from art-dev so
the full-text and ICONCLASS legs find realistic numbers of rows. Vectors come from ``vector_sets`` (a
mixture fitted to art-dev's real region and caption vectors), stored as halfvec like the real ones.

The vectors are stored under ``--model-key``, by default the active embedder's key: the search API looks
up the active embedder's vectors, and a query that the offline text encoder embeds lands in the same space
the mixture was fitted to. Give another key to keep synthetic rows apart from real ones in one database.

Writes beside the database, under SEMART_DATA_DIR/scale/: the stored vectors (float16, row i is the i-th
embedding id), held-out points and queries near them, for ``search_scale.py``'s exact search and recall.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "semart_site.settings.local")

SOURCE = "synthetic"
DETAILS_PER_ARTWORK = 10
LEVELS = ["entity"] * 7 + ["group"] * 2 + ["scene"]
POSITIONS = ["in the upper left", "in the centre", "on the right", "in the lower part", "on the left"]
CHUNK = 50_000


def scale_dir() -> Path:
    from django.conf import settings

    return Path(settings.SEMART_DATA_DIR) / "scale"


def column_types(cursor: Any, table: str, columns: Sequence[str]) -> list[str]:
    cursor.execute(
        "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        [table],
    )
    types = dict(cursor.fetchall())
    return [types[c] for c in columns]


def copy_rows(table: str, columns: Sequence[str], rows: Iterator[Sequence[Any]]) -> int:
    """Binary COPY into ``table`` through Django's psycopg connection (one transaction per call)."""
    from django.db import connection
    from pgvector.psycopg import register_vector

    connection.ensure_connection()
    raw = connection.connection
    register_vector(raw)
    n = 0
    with raw.cursor() as cursor:
        types = column_types(cursor, table, columns)
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)
                n += 1
    raw.commit()
    return n


def _reserve_ids(table: str, n: int) -> int:
    """First id of ``n`` consecutive ids, with the table's sequence moved past them."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pg_get_serial_sequence('{table}', 'id')")
        sequence = cursor.fetchone()[0]
        cursor.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {table}")
        first = int(cursor.fetchone()[0])
        cursor.execute("SELECT setval(%s, %s)", [sequence, first + n])
    return first


def _halfvec(vector: np.ndarray) -> Any:
    from pgvector import HalfVector

    return HalfVector(vector)


def load(*, details: int, model_key: str, centres: int, queries: int, seed: int) -> dict[str, Any]:
    from django.db import connection

    from benchmarks.vector_sets import ClusteredMixture, perturbed_queries, reference_vectors, unit
    from collections_app.models import Artwork

    if Artwork.objects.exclude(source=SOURCE).exists():
        raise SystemExit(
            "this instance holds real artworks: run the synthetic load on an instance of its own"
        )
    if Artwork.objects.filter(source=SOURCE).exists():
        raise SystemExit("synthetic rows are already loaded here; start from an empty SEMART_DATA_DIR")
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    ref = reference_vectors(ROOT / "var" / "bench-scale")
    per_cluster = max(1, details // centres)
    mixtures = {
        "image": ClusteredMixture.fit(
            ref.image, ref.pictures, n_centres=centres, points_per_cluster=per_cluster, rng=rng
        ),
        "text": ClusteredMixture.fit(
            ref.text, ref.captions, n_centres=centres, points_per_cluster=per_cluster, rng=rng
        ),
    }
    fit_s = time.perf_counter() - t0
    # Each cluster is one concept: one label, for the crop and the caption alike.
    cluster_label = [ref.labels[i] for i in rng.integers(0, len(ref.labels), centres)]
    weights = rng.lognormal(0.0, 1.0, centres)
    weights /= weights.sum()

    n_artworks = -(-details // DETAILS_PER_ARTWORK)
    out = scale_dir()
    out.mkdir(parents=True, exist_ok=True)
    stored = {
        kind: np.lib.format.open_memmap(
            out / f"detail-{kind}.npy", mode="w+", dtype=np.float16, shape=(details, 384)
        )
        for kind in ("image", "text")
    }
    now = datetime.now(UTC)
    timings: dict[str, float] = {"fit_mixture_s": round(fit_s, 1)}

    t = time.perf_counter()
    artwork_first = _reserve_ids("collections_app_artwork", n_artworks)
    iconclass_rows = [r for r in ref.iconclass if r] or [[]]
    artwork_columns = [
        "id", "created_at", "updated_at", "source", "source_id", "accession_number", "title", "display_date",
        "medium", "classification", "collection", "dimensions", "description", "credit_line", "licence",
        "source_url", "iiif_url", "image_url", "image", "image_sha256", "thumbnail", "working_image",
        "iconclass", "status", "extra",
    ]  # fmt: skip

    def artwork_rows() -> Iterator[Sequence[Any]]:
        from psycopg.types.json import Jsonb

        for i in range(n_artworks):
            title = ref.titles[int(rng.integers(len(ref.titles)))] if ref.titles else ""
            notations = iconclass_rows[int(rng.integers(len(iconclass_rows)))] if rng.random() < 0.6 else []
            yield [
                artwork_first + i, now, now, SOURCE, f"syn-{i}", "", title, "", "oil on panel", "painting",
                "synthetic", "", "", "", "", "", "", "", "", "", "", "", notations, "processed", Jsonb({}),
            ]  # fmt: skip

    copy_rows("collections_app_artwork", artwork_columns, artwork_rows())
    timings["copy_artworks_s"] = round(time.perf_counter() - t, 1)

    detail_first = _reserve_ids("collections_app_detail", details)
    embedding_first = _reserve_ids("collections_app_detailembedding", 2 * details)
    artwork_embedding_first = _reserve_ids("collections_app_artworkembedding", n_artworks)
    detail_columns = [
        "id", "created_at", "updated_at", "artwork_id", "level", "x", "y", "w", "h", "angle", "polygon",
        "label", "caption", "confidence", "relations", "iconclass", "model_key", "review_state",
    ]  # fmt: skip
    embedding_columns = [
        "id",
        "model_key",
        "kind",
        "dim",
        "vector",
        "created_at",
        "detail_id",
        "artwork_id",
        "level",
    ]
    artwork_vectors = np.zeros((n_artworks, 384), dtype=np.float32)
    copy_s = {"details": 0.0, "embeddings": 0.0}
    from psycopg.types.json import Jsonb

    for start in range(0, details, CHUNK):
        n = min(CHUNK, details - start)
        clusters = rng.choice(centres, size=n, p=weights)
        vectors = {kind: m.points(clusters, rng=rng) for kind, m in mixtures.items()}
        for kind, v in vectors.items():
            stored[kind][start : start + n] = v
        index = np.arange(start, start + n)
        artwork_of = index // DETAILS_PER_ARTWORK
        np.add.at(artwork_vectors, artwork_of, vectors["image"])
        boxes = rng.uniform(0.05, 0.45, (n, 4))

        detail_rows = []
        embedding_rows: list[list[Any]] = [[], []]
        for j in range(n):
            label = cluster_label[clusters[j]]
            caption = f"{label.replace('_', ' ').capitalize()} {POSITIONS[(start + j) % len(POSITIONS)]}."
            x, y, w, h = (float(v) for v in boxes[j])
            detail_id, artwork_id, level = (
                detail_first + start + j,
                artwork_first + artwork_of[j],
                LEVELS[j % 10],
            )
            detail_rows.append([
                detail_id, now, now, artwork_id, level, x, y, w, h, 0.0, None, label, caption, 0.8, Jsonb([]),
                [], "synthetic", "unreviewed",
            ])  # fmt: skip
            for k, kind in enumerate(("image", "text")):
                embedding_rows[k].append([
                    embedding_first + k * details + start + j, model_key, kind, 384,
                    _halfvec(vectors[kind][j]), now, detail_id, artwork_id, level,
                ])  # fmt: skip

        t = time.perf_counter()
        copy_rows("collections_app_detail", detail_columns, iter(detail_rows))
        copy_s["details"] += time.perf_counter() - t

        t = time.perf_counter()
        copy_rows(
            "collections_app_detailembedding", embedding_columns, iter(embedding_rows[0] + embedding_rows[1])
        )
        copy_s["embeddings"] += time.perf_counter() - t
        print(f"loaded {start + n}/{details}", file=sys.stderr, flush=True)
    timings["copy_details_s"] = round(copy_s["details"], 1)
    timings["copy_detail_embeddings_s"] = round(copy_s["embeddings"], 1)

    artwork_vectors = unit(artwork_vectors)
    t = time.perf_counter()
    copy_rows(
        "collections_app_artworkembedding",
        ["id", "model_key", "kind", "dim", "vector", "created_at", "artwork_id"],
        (
            [
                artwork_embedding_first + i,
                model_key,
                "image",
                384,
                _halfvec(artwork_vectors[i]),
                now,
                artwork_first + i,
            ]
            for i in range(n_artworks)
        ),
    )
    timings["copy_artwork_embeddings_s"] = round(time.perf_counter() - t, 1)
    for kind in stored:
        stored[kind].flush()
    np.save(out / "artwork-image.npy", artwork_vectors.astype(np.float16))

    # Queries near the data: points of the same mixtures that were never stored, moved a little.
    held_out_clusters = rng.choice(centres, size=queries, p=weights)
    held = {kind: m.points(held_out_clusters, rng=rng) for kind, m in mixtures.items()}
    np.savez(
        out / "queries.npz",
        **{f"held_out_{k}": v for k, v in held.items()},
        **{f"query_{k}": perturbed_queries(v, cosine=0.9, rng=rng) for k, v in held.items()},
    )
    (out / "ids.json").write_text(
        json.dumps(
            {
                "model_key": model_key,
                "details": details,
                "artworks": n_artworks,
                "detail_first": detail_first,
                "artwork_first": artwork_first,
                "detail_embedding_first": {"image": embedding_first, "text": embedding_first + details},
                "artwork_embedding_first": artwork_embedding_first,
            }
        )
    )
    with connection.cursor() as cursor:
        t = time.perf_counter()
        for table in ("collections_app_artwork", "collections_app_detail", "collections_app_detailembedding",
                      "collections_app_artworkembedding"):  # fmt: skip
            cursor.execute(f"VACUUM ANALYZE {table}")
        timings["vacuum_analyze_s"] = round(time.perf_counter() - t, 1)
    return {
        "timings": timings,
        "mixture": {
            kind: {
                "centres": centres,
                "spread": round(m.spread, 3),
                "target_nearest_cosine": round(m.target_cosine, 3),
                "same_cluster_cosine": round(m.same_cluster_cosine(rng=np.random.default_rng(2)), 3),
            }
            for kind, m in mixtures.items()
        },
        "reference_vectors": {"regions": len(ref.labels), "pictures": len(set(ref.pictures))},
    }


def build_indexes(*, model_key: str, maintenance_work_mem: str, parallel_workers: int) -> dict[str, Any]:
    """The partial HNSW indexes the search uses (collections_app.vector_indexes), timed one by one."""
    from django.db import connection

    from collections_app.vector_indexes import ensure_hnsw_index

    out = {}
    with connection.cursor() as cursor:
        cursor.execute(f"SET maintenance_work_mem = '{maintenance_work_mem}'")
        cursor.execute(f"SET max_parallel_maintenance_workers = {int(parallel_workers)}")
    for target, kind in (("detail", "image"), ("detail", "text"), ("artwork", "image")):
        t = time.perf_counter()
        name = ensure_hnsw_index(target=target, model_key=model_key, kind=kind, dim=384)
        out[f"{target}_{kind}"] = {"index": name, "build_s": round(time.perf_counter() - t, 1)}
        print(f"built {name} in {out[f'{target}_{kind}']['build_s']} s", file=sys.stderr, flush=True)
    return out


def sizes() -> dict[str, Any]:
    from django.db import connection

    out: dict[str, Any] = {}
    with connection.cursor() as cursor:
        for table in ("collections_app_detail", "collections_app_detailembedding",
                      "collections_app_artwork", "collections_app_artworkembedding"):  # fmt: skip
            cursor.execute(
                "SELECT pg_relation_size(%s), pg_total_relation_size(%s), pg_indexes_size(%s)", [table] * 3
            )
            heap, total, indexes = cursor.fetchone()
            out[table] = {"heap_bytes": heap, "total_bytes": total, "indexes_bytes": indexes}
        cursor.execute(
            "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index "
            "JOIN pg_class c ON c.oid = indexrelid WHERE c.relname LIKE '%%hnsw%%'"
        )
        out["hnsw"] = dict(cursor.fetchall())
        cursor.execute("SELECT pg_database_size(current_database())")
        out["database_bytes"] = cursor.fetchone()[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--details", type=int, required=True)
    parser.add_argument("--model-key", default=None, help="default: the active embedder's key")
    parser.add_argument("--centres", type=int, default=4000)
    parser.add_argument("--queries", type=int, default=1000, help="held-out points kept for queries")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--maintenance-work-mem", default="3GB")
    parser.add_argument(
        "--parallel-workers", type=int, default=1, help="HNSW build workers besides the leader"
    )
    parser.add_argument(
        "--no-hnsw",
        action="store_true",
        help="skip pgvector's HNSW indexes (~30 min at 1M on 2 cores): for runs with SEARCH_INDEX=faiss",
    )
    args = parser.parse_args()

    import django

    django.setup()
    from django.core.management import call_command

    from workers.inference.registry import get_embedder

    call_command("migrate", verbosity=0)
    model_key = args.model_key or get_embedder().model_key
    started = time.perf_counter()
    loaded = load(
        details=args.details, model_key=model_key, centres=args.centres, queries=args.queries, seed=args.seed
    )
    built = (
        {}
        if args.no_hnsw
        else build_indexes(
            model_key=model_key,
            maintenance_work_mem=args.maintenance_work_mem,
            parallel_workers=args.parallel_workers,
        )
    )
    result = {
        "benchmark": "synthetic_load",
        "details": args.details,
        "model_key": model_key,
        "machine": {"cpus": os.cpu_count(), "platform": sys.platform},
        **loaded,
        "hnsw_build": built,
        "hnsw_settings": {
            "maintenance_work_mem": args.maintenance_work_mem,
            "parallel_workers": args.parallel_workers,
        },
        "sizes": sizes(),
        "total_s": round(time.perf_counter() - started, 1),
    }
    (scale_dir() / "load.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
