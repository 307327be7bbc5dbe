"""Search at scale: warm latency through the real HTTP API, the index alone against exact search, the NumPy
brute-force scan of the same vectors, rerank and cancellation latency. Prints JSON.

    SEMART_DATA_DIR=var/bench-scale/1m REDIS_URL=redis://127.0.0.1:6379/13 \
        .venv/bin/python benchmarks/search_scale.py --label 1m [--queries 200] [--ef 100 200 400] [--faiss]

The instance is one filled by ``synthetic.py`` (vectors and held-out queries under SEMART_DATA_DIR/scale/)
or one with a real collection processed (art-dev). What runs:

- **API**: uvicorn serving semart_site.asgi on loopback (DEBUG off), a Celery worker on the ``rerank``
  queue, an API key; ``GET /api/v1/search/?q=...`` with a keep-alive client, first stage alone
  (``rerank=false``) and with the offline reranker (64 candidates). The API takes text, not vectors, so the
  queries are real texts (art-dev's queries, then its ICONCLASS texts and box labels); their vectors are
  encoded once beforehand (the encoder's time is reported apart), so a run measures a warm search whose
  query vector is a cache hit.
- **Index alone**: the vector leg's own SQL (``retrieval.vector_leg_sql``, HNSW, iterative scan) at each
  ef_search, and FAISS built as ``faiss_index`` builds it, against exact top-k on the stored vectors:
  recall@10 and @64, ms per query. Synthetic instances use held-out points moved to cosine 0.9 (queries near
  the data); the art-dev instance uses the real text queries' vectors.
- **Brute force**: NumPy ``V @ q`` over the same vectors (float32), ms per query and bytes per second.
- **halfvec**: exact top-k on float16-rounded vectors vs float32, on fresh mixture samples (``--halfvec``).
- **Rerank**: the offline reranker over 64 first-stage candidates in this process (what the worker does).
- **Cancellation**: the client closes the connection while its rerank runs; the time until the stop flag is
  in Redis (web side), and the time the reranker takes to notice a stop between batches (worker side).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "semart_site.settings.local")
os.environ.setdefault("DJANGO_DEBUG", "false")

ART_DEV = ROOT.parent / "shared" / "datasets" / "art-dev"
DETAIL_LIMIT = 192  # what the search asks of a detail leg: candidates (64) x 3
DIM = 384


def stats(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(round(p * (len(ordered) - 1))))], 2)

    return {
        "n": len(ordered),
        "mean": round(statistics.fmean(ordered), 2),
        "p50": pct(0.50),
        "p95": pct(0.95),
        "p99": pct(0.99),
    }


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "gpu": None,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }


def real_texts(n: int) -> list[str]:
    """Distinct texts a person might type: art-dev's queries, its ICONCLASS texts, box labels, titles."""
    texts = [
        json.loads(line)["query"] for line in (ART_DEV / "queries.jsonl").read_text().splitlines() if line
    ]
    rows = [json.loads(line) for line in (ART_DEV / "metadata.jsonl").read_text().splitlines() if line]
    for row in rows:
        texts += [t.strip() for t in row.get("iconclass_en", "").split(";") if t.strip()]
    for row in rows:
        texts += [b["label"].replace("_", " ") for b in row.get("boxes") or []]
    for row in rows:  # titles, without the file-name dressing some carry
        title = re.sub(r"^\[[^]]*\]\s*|\.(jpe?g|png|tiff?)$", "", row.get("title", ""), flags=re.I).strip()
        if title:
            texts.append(title)
    return list(dict.fromkeys(texts))[:n]


# --- the instance's vectors ------------------------------------------------------------------------------


class StoredVectors:
    """Every detail vector of one kind under the model key, as float32 rows, and the detail id of each row."""

    def __init__(self, kind: str, model_key: str) -> None:
        from django.conf import settings

        scale = Path(settings.SEMART_DATA_DIR) / "scale"
        if (scale / "ids.json").is_file():
            ids = json.loads((scale / "ids.json").read_text())
            self.vectors = np.load(scale / f"detail-{kind}.npy").astype(np.float32)
            self.detail_ids = ids["detail_first"] + np.arange(len(self.vectors))
        else:
            from collections_app.models import DetailEmbedding

            rows = DetailEmbedding.objects.filter(model_key=model_key, kind=kind, dim=DIM).values_list(
                "detail_id", "vector"
            )
            self.detail_ids = np.asarray([r[0] for r in rows], dtype=np.int64)
            # pgvector gives HalfVector objects or plain lists, depending on its version
            self.vectors = np.asarray(
                [r[1].to_list() if hasattr(r[1], "to_list") else r[1] for r in rows], dtype=np.float32
            )
        norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
        self.vectors /= np.maximum(norms, 1e-12)

    def exact(self, queries: np.ndarray, k: int) -> list[np.ndarray]:
        """Detail ids of the exact top ``k`` of each query, best first (one matrix product per 64 queries)."""
        out = []
        for start in range(0, len(queries), 64):
            scores = self.vectors @ queries[start : start + 64].T
            for column in scores.T:
                top = np.argpartition(-column, k)[:k]
                out.append(self.detail_ids[top[np.argsort(-column[top])]])
        return out


def query_vectors(kind: str, texts: list[str], encoded: dict[str, np.ndarray], n: int) -> np.ndarray:
    from django.conf import settings

    path = Path(settings.SEMART_DATA_DIR) / "scale" / "queries.npz"
    if path.is_file():
        return np.load(path)[f"query_{kind}"][:n]
    return np.stack([encoded[t] for t in texts[:n]])


def recall(found: Sequence[int], truth: Sequence[int], k: int) -> float:
    return len(set(list(found)[:k]) & set(list(truth)[:k])) / k


# --- index alone -----------------------------------------------------------------------------------------


def pgvector_leg(query: np.ndarray, *, model_key: str, kind: str, ef_search: int) -> list[int]:
    """The detail vector leg's SQL as the search runs it (HNSW, iterative scan), at ``ef_search``."""
    from django.conf import settings
    from django.db import connection, transaction

    from search_app.retrieval import set_hnsw_scan, vector_leg_sql

    built = vector_leg_sql(
        vector=query, model_key=model_key, target="detail", kind=kind, limit=DETAIL_LIMIT, exact=False
    )
    settings.SEARCH = {**settings.SEARCH, "hnsw_ef_search": ef_search}
    with transaction.atomic(), connection.cursor() as cursor:
        set_hnsw_scan(cursor, limit=DETAIL_LIMIT)
        cursor.execute(built.sql, built.params)
        return [row[1] for row in cursor.fetchall()]


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - t) * 1000


def index_alone(
    *,
    stored: StoredVectors,
    queries: np.ndarray,
    model_key: str,
    kind: str,
    efs: list[int],
    use_faiss: bool,
    faiss_hnsw: bool,
    faiss_saved_nprobes: Sequence[int] = (),
) -> dict[str, Any]:
    truth = stored.exact(queries, 64)
    out: dict[str, Any] = {"vectors": len(stored.vectors), "queries": len(queries)}

    # Brute force: the physical reference, float32 rows, one query at a time.
    brute = [timed(lambda q=q: stored.vectors @ q)[1] for q in queries[:50]]
    scanned = stored.vectors.nbytes
    out["numpy_brute_force"] = {
        "ms": stats(brute),
        "bytes_per_query": scanned,
        "gb_per_s": round(scanned / (statistics.median(brute) / 1000) / 1e9, 2),
    }
    for ef in efs:
        pgvector_leg(queries[0], model_key=model_key, kind=kind, ef_search=ef)  # warm the session
        rows, ms = [], []
        for q in queries:
            found, t = timed(lambda q=q, ef=ef: pgvector_leg(q, model_key=model_key, kind=kind, ef_search=ef))
            rows.append(found)
            ms.append(t)
        out[f"pgvector_hnsw_ef{max(ef, DETAIL_LIMIT)}"] = {
            "ms": stats(ms),
            "rows_returned_mean": round(statistics.fmean(len(r) for r in rows), 1),
            "recall@10": round(
                statistics.fmean(recall(f, t, 10) for f, t in zip(rows, truth, strict=True)), 4
            ),
            "recall@64": round(
                statistics.fmean(recall(f, t, 64) for f, t in zip(rows, truth, strict=True)), 4
            ),
        }
    if faiss_saved_nprobes:
        out.update(
            saved_faiss(
                queries=queries, truth=truth, model_key=model_key, kind=kind, nprobes=faiss_saved_nprobes
            )
        )
    if use_faiss or faiss_hnsw:
        out.update(
            faiss_alone(
                stored=stored,
                queries=queries,
                truth=truth,
                model_key=model_key,
                kind=kind,
                configured=use_faiss,
                with_hnsw=faiss_hnsw,
            )
        )
    return out


def saved_faiss(
    *, queries: np.ndarray, truth: list[np.ndarray], model_key: str, kind: str, nprobes: Sequence[int]
) -> dict[str, Any]:
    """The index the site searches (saved by ``search_index rebuild``), at each IVF nprobe. Its ids are
    embedding row ids; the truth is detail ids, so each id is mapped through the embedding table."""
    import faiss

    from collections_app.models import DetailEmbedding
    from search_app.faiss_index import VectorIndex

    vi = VectorIndex(target="detail", model_key=model_key, kind=kind, dim=DIM)
    if not vi.load():
        raise SystemExit("no saved FAISS index: run `manage.py search_index rebuild` first")
    rows = DetailEmbedding.objects.filter(model_key=model_key, kind=kind).values_list("id", "detail_id")
    to_detail = dict(rows.iterator(chunk_size=50_000))
    out: dict[str, Any] = {}
    for nprobe in nprobes if hasattr(vi.index, "nprobe") else [0]:
        if nprobe:
            vi.index.nprobe = nprobe
        found, ms = [], []
        for q in queries:
            (_, labels), t = timed(lambda q=q: vi.index.search(q.reshape(1, -1), 64))
            ms.append(t)
            found.append([to_detail.get(int(i), -1) for i in labels[0]])
        out[f"faiss_saved_{type(vi.index).__name__}_nprobe{nprobe}"] = {
            "ms": stats(ms),
            "bytes": int(faiss.serialize_index(vi.index).nbytes),
            "recall@10": round(
                statistics.fmean(recall(f, t, 10) for f, t in zip(found, truth, strict=True)), 4
            ),
            "recall@64": round(
                statistics.fmean(recall(f, t, 64) for f, t in zip(found, truth, strict=True)), 4
            ),
        }
    return out


def faiss_alone(
    *,
    stored: StoredVectors,
    queries: np.ndarray,
    truth: list[np.ndarray],
    model_key: str,
    kind: str,
    configured: bool,
    with_hnsw: bool,
) -> dict[str, Any]:
    """FAISS as ``faiss_index`` builds it for this many vectors (flat, or IVF with its nprobe), and an
    in-process HNSW (IndexHNSWFlat, ``with_hnsw``) for comparison."""
    import faiss

    from search_app.faiss_index import VectorIndex

    out: dict[str, Any] = {}
    if configured:
        t = time.perf_counter()
        index = VectorIndex(target="detail", model_key=model_key, kind=kind, dim=DIM)._new_index(
            len(stored.vectors)
        )
        if not index.is_trained:
            index.train(stored.vectors)
        index.add_with_ids(stored.vectors, stored.detail_ids.astype(np.int64))
        build_s = time.perf_counter() - t
        out["faiss_as_configured"] = _faiss_measure(index, queries, truth, build_s, faiss)
        out["faiss_as_configured"]["type"] = type(index).__name__
        if hasattr(index, "nprobe"):  # IVF: what more probes buy
            out["faiss_as_configured"]["nprobe"] = index.nprobe
            for nprobe in (128, 512):
                index.nprobe = nprobe
                out[f"faiss_ivf_nprobe{nprobe}"] = _faiss_measure(index, queries, truth, build_s, faiss)
        del index
    if not with_hnsw:
        return out
    hnsw = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 64
    t = time.perf_counter()
    hnsw.add(stored.vectors)
    build_s = time.perf_counter() - t
    for ef in (64, 128, 256):
        hnsw.hnsw.efSearch = ef
        measured = _faiss_measure(hnsw, queries, truth, build_s, faiss, ids=stored.detail_ids)
        out[f"faiss_hnsw32_ef{ef}"] = measured
    return out


def _faiss_measure(
    index: Any, queries: np.ndarray, truth: list[np.ndarray], build_s: float, faiss: Any, ids: Any = None
) -> dict[str, Any]:
    found, ms = [], []
    for q in queries:
        (_, labels), t = timed(lambda q=q: index.search(q.reshape(1, -1), 64))
        ms.append(t)
        row = labels[0]
        found.append(ids[row] if ids is not None else row)
    return {
        "build_s": round(build_s, 1),
        "bytes": int(faiss.serialize_index(index).nbytes),
        "ms": stats(ms),
        "recall@10": round(statistics.fmean(recall(f, t, 10) for f, t in zip(found, truth, strict=True)), 4),
        "recall@64": round(statistics.fmean(recall(f, t, 64) for f, t in zip(found, truth, strict=True)), 4),
    }


def halfvec_recall(n: int, queries: int = 200) -> dict[str, Any]:
    """Exact top-k over float16-rounded vectors against float32, on fresh samples of the image mixture."""
    from benchmarks.vector_sets import ClusteredMixture, perturbed_queries, reference_vectors

    rng = np.random.default_rng(11)
    ref = reference_vectors(ROOT / "var" / "bench-scale")
    mixture = ClusteredMixture.fit(
        ref.image, ref.pictures, n_centres=4000, points_per_cluster=max(1, n // 4000), rng=rng
    )
    data, clusters = mixture.sample(n + queries, rng=rng)
    qs = perturbed_queries(data[n:], cosine=0.9, rng=rng)
    data = data[:n]
    half = data.astype(np.float16).astype(np.float32)
    out = {}
    for k in (10, 64):
        hits = []
        for q in qs:
            a = np.argpartition(-(data @ q), k)[:k]
            b = np.argpartition(-(half @ q), k)[:k]
            hits.append(len(set(a) & set(b)) / k)
        out[f"recall@{k}"] = round(statistics.fmean(hits), 4)
    return {"vectors": n, "queries": queries, **out}


# --- API -------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def services(env: dict[str, str]) -> Iterator[str]:
    """uvicorn (one process) and a Celery worker on the rerank queue, both stopped on exit."""
    port = _free_port()
    web = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "semart_site.asgi:application", "--host", "127.0.0.1", "--port",
         str(port), "--log-level", "warning", "--no-access-log"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "semart_site", "worker", "-Q", "rerank", "-c", "1", "--pool",
         "prefork", "--loglevel", "WARNING", "-n", f"bench-rerank-{port}@%h"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/api/v1/health/", timeout=5)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or web.poll() is not None:
                    raise SystemExit(  # noqa: B904 - the connection error says nothing useful
                        "uvicorn did not start: " + (web.stderr.read().decode() if web.stderr else "")
                    )
                time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        for process in (web, worker):
            process.terminate()
        for process in (web, worker):
            process.wait(timeout=30)


def api_latency(
    address: str, key: str, texts: list[str], *, rerank: bool, warmup: int, warmup_s: float
) -> dict[str, Any]:
    """Warm: the first ``warmup`` texts, again and again until ``warmup_s`` have passed, so that the web
    process's start-up work (loading the indexes, their first syncs on background threads, the pool's
    connections) is over; then every text once, timed."""
    import httpx

    url = f"http://{address}/api/v1/search/"
    headers = {"Authorization": f"Api-Key {key}"}
    wall, server, degraded, errors = [], {"candidates": [], "rerank": [], "total": []}, 0, 0
    with httpx.Client(headers=headers, timeout=60) as client:  # keep-alive: one connection reused
        warm_until = time.monotonic() + warmup_s
        while True:
            for text in texts[:warmup]:
                client.get(url, params={"q": text, "rerank": str(rerank).lower()})
            if time.monotonic() >= warm_until:
                break
        for text in texts:
            t = time.perf_counter()
            response = client.get(url, params={"q": text, "rerank": str(rerank).lower()})
            wall.append((time.perf_counter() - t) * 1000)
            if response.status_code != 200:
                errors += 1
                continue
            body = response.json()
            degraded += bool(body["degraded"])
            for stage in server:
                if stage in body["timings_ms"]:
                    server[stage].append(body["timings_ms"][stage])
    return {
        "end_to_end_ms": stats(wall),
        "server_ms": {stage: stats(v) for stage, v in server.items() if v},
        "degraded": degraded,
        "errors": errors,
    }


def cancellation_through_api(
    address: str, key: str, texts: list[str], redis_url: str, *, close_after_ms: float, trials: int
) -> dict[str, Any]:
    """Close the client's socket while its rerank runs (``close_after_ms`` after sending, about when the
    first stage ends); time until the search's stop flag is in Redis (web side) and until the rerank
    worker posts that it stopped (or that it finished anyway)."""
    import redis

    from search_app.request_control import mailbox_key, stop_key, task_ids

    client = redis.Redis.from_url(redis_url)
    host, port = address.split(":")
    pattern = stop_key("*")
    to_flag, to_worker_stop, finished_anyway, no_flag = [], [], 0, 0
    for i in range(trials):
        for stale in client.scan_iter(pattern):
            client.delete(stale)
        sock = socket.create_connection((host, int(port)))
        query = texts[i % len(texts)].replace(" ", "+")
        sock.sendall(
            f"GET /api/v1/search/?q={query}&rerank=true HTTP/1.1\r\nHost: {address}\r\n"
            f"Authorization: Api-Key {key}\r\nConnection: close\r\n\r\n".encode()
        )
        time.sleep(close_after_ms * (0.9 + 0.05 * (i % 5)) / 1000)
        sock.close()
        closed = time.perf_counter()
        search_id = None
        while time.perf_counter() < closed + 3.0:
            found = next(client.scan_iter(pattern), None)
            if found is not None:
                to_flag.append((time.perf_counter() - closed) * 1000)
                search_id = found.decode().split(":")[2]
                break
            time.sleep(0.0005)
        if search_id is None:
            no_flag += 1  # answered before the close, or the close came before the search began
            continue
        mailbox = mailbox_key(task_ids(search_id)[1])
        while time.perf_counter() < closed + 5.0:
            posted = client.lindex(mailbox, 0)
            if posted is not None:
                if json.loads(posted).get("ok"):
                    finished_anyway += 1
                else:
                    to_worker_stop.append((time.perf_counter() - closed) * 1000)
                break
            time.sleep(0.0005)
        time.sleep(0.3)
    return {
        "close_after_ms": round(close_after_ms, 1),
        "trials": trials,
        "disconnect_to_stop_flag_ms": stats(to_flag) if to_flag else None,
        "disconnect_to_worker_stopped_ms": stats(to_worker_stop) if to_worker_stop else None,
        "worker_finished_before_noticing": finished_anyway,
        "no_stop_flag": no_flag,
    }


# --- rerank in this process ------------------------------------------------------------------------------


def rerank_and_stop(texts: list[str], model_key: str, n: int) -> dict[str, Any]:
    from search_app.pipeline import _normalise, _rerank_payload, first_stage
    from search_app.query_encoding import encode_text_here
    from search_app.reranking import build_rerank_candidates, rerank_run
    from search_app.types import SearchQuery
    from workers.inference.base import StopRequested
    from workers.inference.registry import get_reranker

    reranker = get_reranker()
    ms, build_ms, counts, stop_ms = [], [], [], []
    for text in texts[:n]:
        query = SearchQuery(text=text)
        parsed, exclude = _normalise(query)
        vector, _ = encode_text_here(parsed)
        stage = first_stage(query, text=parsed, exclude=exclude, vector=vector, model_key=model_key)
        payload = _rerank_payload(stage.candidates)
        counts.append(len(payload))
        build_ms.append(
            timed(
                lambda payload=payload: build_rerank_candidates(
                    candidates=payload, model_key=model_key, level="artworks"
                )
            )[1]
        )
        _, t = timed(
            lambda payload=payload, parsed=parsed, vector=vector: rerank_run(
                text=parsed, query_vector=vector, model_key=model_key, level="artworks",
                candidates=payload, reranker=reranker,
            )
        )  # fmt: skip
        ms.append(t)
        # Worker side of cancellation: the flag turns on half way through; how long until scoring stops?
        flip_at = time.perf_counter() + t / 2000
        flipped: list[float] = []

        def should_stop(flip_at: float = flip_at, flipped: list[float] = flipped) -> bool:
            now = time.perf_counter()
            if now >= flip_at:
                flipped.append(now)
                return True
            return False

        try:
            rerank_run(
                text=parsed, query_vector=vector, model_key=model_key, level="artworks",
                candidates=payload, reranker=reranker, should_stop=should_stop,
            )  # fmt: skip
        except StopRequested:
            stop_ms.append((time.perf_counter() - flip_at) * 1000)
    return {
        "reranker": reranker.model_key,
        "candidates": stats(counts),
        "rerank_ms": stats(ms),
        "of_which_loading_candidates_ms": stats(build_ms),
        "flag_to_stop_ms": stats(stop_ms) if stop_ms else None,
    }


def _iconclass_leg_from_text(text: str) -> Any:
    from search_app.iconclass_expansion import expand_query
    from search_app.retrieval import iconclass_leg

    return iconclass_leg(notations=expand_query(text), limit=64)


def per_leg(texts: list[str], model_key: str) -> dict[str, Any]:
    """The first stage's legs one by one in this process, to see where the time goes; the vector legs
    from the index the settings choose (pgvector or FAISS), the words from PostgreSQL or the word index."""
    from search_app.pipeline import _vector_leg_function
    from search_app.query_encoding import encode_text_here
    from search_app.retrieval import lexical_leg

    vector_leg = _vector_leg_function()
    lexical_leg(text="warm up", limit=64)  # loads the word index, if chosen

    legs: dict[str, list[float]] = {}
    for text in texts:
        vector, _ = encode_text_here(text)
        common = {"vector": vector, "model_key": model_key}
        runs: dict[str, Callable[[], Any]] = {
            "vector_artworks": partial(vector_leg, **common, target="artwork", kind="image", limit=64),
            "vector_details": partial(
                vector_leg, **common, target="detail", kind="image", limit=DETAIL_LIMIT
            ),
            "vector_captions": partial(
                vector_leg, **common, target="detail", kind="text", limit=DETAIL_LIMIT
            ),
            "lexical": partial(lexical_leg, text=text, limit=64),
            "iconclass_with_expansion": partial(_iconclass_leg_from_text, text),
        }
        for name, run in runs.items():
            legs.setdefault(name, []).append(timed(run)[1])
    return {name: stats(v) for name, v in legs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="names the run in the output (artdev, 100k, 1m)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--warmup-s", type=float, default=5.0, help="and repeat them at least this long (start-up syncs)"
    )
    parser.add_argument(
        "--api-queries", type=int, default=None, help="fewer API queries (default: --queries)"
    )
    parser.add_argument("--rerank-queries", type=int, default=50, help="in-process rerank runs")
    parser.add_argument("--cancel-trials", type=int, default=30)
    parser.add_argument(
        "--ef", type=int, nargs="*", default=[100, 400], help="hnsw_ef_search values (none: no pgvector runs)"
    )
    parser.add_argument("--faiss", action="store_true", help="FAISS as configured, for the image vectors")
    parser.add_argument(
        "--faiss-saved",
        action="store_true",
        help="the FAISS indexes `search_index rebuild` saved, both kinds, at each --nprobe (no build here)",
    )
    parser.add_argument("--nprobe", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--faiss-hnsw", action="store_true", help="and FAISS HNSW (slow to build on 2 cores)")
    parser.add_argument("--halfvec", type=int, default=0, help="check halfvec recall on this many vectors")
    parser.add_argument(
        "--parts", nargs="+", default=["index", "legs", "rerank", "api", "cancel"], help="run in this order"
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here, after every part")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so uvicorn and the worker are stopped too

    import django

    django.setup()
    from django.conf import settings

    from collections_app.models import DetailEmbedding
    from search_app.api.services import api_key_create
    from search_app.query_encoding import embedder_model_key, encode_text_here
    from search_app.query_parsing import parse_query_text

    model_key = embedder_model_key()
    result: dict[str, Any] = {
        "benchmark": "search_scale",
        "label": args.label,
        "machine": machine(),
        "model_key": model_key,
        "details": DetailEmbedding.objects.filter(model_key=model_key, kind="image").count(),
        "index": settings.SEARCH["index"],
    }
    texts = real_texts(args.queries)  # the first --warmup of them warm each API run up, then all count
    encoded, encode_ms = {}, []
    for text in texts:  # warms the query-vector cache the API reads; the encoder's own time
        parsed = parse_query_text(text)[0]  # what the pipeline encodes
        (vector, _), t = timed(lambda parsed=parsed: encode_text_here(parsed))
        encoded[text] = vector
        encode_ms.append(t)
    result["encode_in_process_ms_first_call_cached_after"] = stats(encode_ms)
    print(f"{args.label}: encoded {len(encoded)} texts", file=sys.stderr, flush=True)

    def legs() -> None:
        result["first_stage_legs_in_process"] = per_leg(texts[:50], model_key)

    def api_and_cancel() -> None:
        key_row, key = api_key_create(
            name=f"bench-{args.label}-{int(time.time())}", scopes=["read"], rate="1000000/minute"
        )
        env = {
            **os.environ,
            "SEMART_DATA_DIR": str(settings.SEMART_DATA_DIR),
            "REDIS_URL": settings.REDIS_URL,
        }
        api_texts = texts[: args.api_queries or len(texts)]
        with services(env) as address:
            if "api" in args.parts:
                for name, rerank in (("api_first_stage", False), ("api_with_rerank", True)):
                    result[name] = api_latency(
                        address, key, api_texts, rerank=rerank, warmup=args.warmup, warmup_s=args.warmup_s
                    )
                    print(
                        f"{args.label}: {name} {result[name]['end_to_end_ms']}", file=sys.stderr, flush=True
                    )
            if "cancel" in args.parts:
                first = result.get("api_first_stage", {}).get("end_to_end_ms", {}).get("p50", 50.0)
                result["cancellation_through_api"] = cancellation_through_api(
                    address,
                    key,
                    texts,
                    settings.REDIS_URL,
                    close_after_ms=first * 1.1 + 5,
                    trials=args.cancel_trials,
                )
        key_row.delete()

    def rerank() -> None:
        result["rerank_in_process"] = rerank_and_stop(texts, model_key, args.rerank_queries)

    def index() -> None:
        result["index_alone"] = {}
        for kind in ("image", "text"):
            stored = StoredVectors(kind, model_key)
            result["index_alone"][kind] = index_alone(
                stored=stored,
                queries=query_vectors(kind, texts, encoded, args.queries),
                model_key=model_key,
                kind=kind,
                efs=args.ef,
                use_faiss=args.faiss and kind == "image",  # the text vectors' index is built the same way
                faiss_hnsw=args.faiss_hnsw and kind == "image",
                faiss_saved_nprobes=args.nprobe if args.faiss_saved else [],
            )
            del stored

    parts: dict[str, Callable[[], None]] = {
        "legs": legs, "api": api_and_cancel, "cancel": api_and_cancel, "rerank": rerank, "index": index
    }  # fmt: skip
    done: set[Callable[[], None]] = set()
    for name in args.parts:  # in the order given; partial results are kept if a later part is stopped
        if parts[name] in done:
            continue
        parts[name]()
        done.add(parts[name])
        print(f"{args.label}: {name} done", file=sys.stderr, flush=True)
        if args.out:
            args.out.write_text(json.dumps(result, indent=1))
    if args.halfvec:
        result["halfvec_vs_float32_exact"] = halfvec_recall(args.halfvec)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
