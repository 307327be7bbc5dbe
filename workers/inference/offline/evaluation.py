"""Held-out search quality of a projection head: text -> picture nDCG@10 on art-dev pictures it never saw.

A picture's score for a query is the best cosine between the query's MiniLM vector and the projected
vectors of the picture's regions (the whole picture and the detector's sliding windows), as a detail
search over region vectors would rank it. Each query is scored only over its judged pool (qrels are
incomplete) restricted to held-out pictures, against the expected nDCG@10 of a random order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workers.inference.offline.detector import sliding_windows
from workers.inference.offline.head import ProjectionHead
from workers.inference.offline.text import get_encoder
from workers.inference.offline.training import Picture, read_art_dev, region_features


@dataclass
class QueryResult:
    qid: str
    type: str
    ndcg: float
    random_ndcg: float
    n_relevant: int
    pool: int


def ndcg_at(ranked_relevance: np.ndarray, n_relevant: int, k: int = 10) -> float:
    gains = ranked_relevance[:k] / np.log2(np.arange(2, min(k, len(ranked_relevance)) + 2))
    ideal = (1.0 / np.log2(np.arange(2, min(k, n_relevant) + 2))).sum()
    return float(gains.sum() / ideal) if ideal > 0 else 0.0


def _picture_vectors(head: ProjectionHead, picture: Picture, cache_dir: Path | None) -> np.ndarray:
    from PIL import Image

    with Image.open(picture.path) as image:
        size = image.size
    regions = [(0.0, 0.0, 1.0, 1.0), *sliding_windows(*size)]
    return head.project(region_features(picture, regions, cache_dir))


def routed_scores(
    head: ProjectionHead, query: np.ndarray, regions: np.ndarray, *, temperature: float = 20.0
) -> float:
    """FINDINGS.md's "routed" score: the query picks label phrases (softmax over its cosines with them) and
    a picture scores the chosen labels' probabilities, averaged over its 3 best regions."""
    weights = np.exp(temperature * (head.phrase_embeddings @ query))
    weights /= weights.sum()
    per_region = head.label_scores(regions) @ weights
    return float(np.sort(per_region)[-3:].mean())


def search_ndcg(
    head: ProjectionHead,
    dataset: Path,
    *,
    cache_dir: Path | None = None,
    seed: int = 0,
    routed: bool = False,
) -> list[QueryResult]:
    trained = set(head.train_ids)
    pictures = [p for p in read_art_dev(dataset) if p.id not in trained]
    vectors = {p.id: _picture_vectors(head, p, cache_dir) for p in pictures}
    annotated = {p.id for p in pictures if p.boxes}
    relevant: dict[str, set[str]] = {}
    for line in (dataset / "qrels.tsv").read_text().splitlines()[1:]:
        qid, image_id, judgement = line.split("\t")
        if int(judgement) > 0:
            relevant.setdefault(qid, set()).add(image_id)
    queries = [
        json.loads(line) for line in (dataset / "queries.jsonl").read_text().splitlines() if line.strip()
    ]
    query_vectors = get_encoder().encode([q["query"] for q in queries])
    rng = np.random.default_rng(seed)
    results = []
    for query, qv in zip(queries, query_vectors, strict=True):
        pool = sorted(annotated if query.get("judged_pool") == "box_annotated_images" else vectors)
        rel = np.array([pid in relevant.get(query["qid"], set()) for pid in pool], dtype=float)
        if rel.sum() == 0:
            continue
        if routed:
            scores = np.array([routed_scores(head, qv, vectors[pid]) for pid in pool])
        else:
            scores = np.array([float((vectors[pid] @ qv).max()) for pid in pool])
        ranked = rel[np.argsort(-scores, kind="stable")]
        random = np.mean([ndcg_at(rng.permutation(rel), int(rel.sum())) for _ in range(200)])
        results.append(
            QueryResult(
                qid=query["qid"],
                type=query["type"],
                ndcg=ndcg_at(ranked, int(rel.sum())),
                random_ndcg=float(random),
                n_relevant=int(rel.sum()),
                pool=len(pool),
            )
        )
    return results


def summarise(results: list[QueryResult], *, seed: int = 0) -> dict[str, dict[str, float]]:
    """Mean nDCG@10 per query type with a bootstrap 95 % interval over queries, and the random baseline."""
    rng = np.random.default_rng(seed)
    summary = {}
    for kind in sorted({r.type for r in results}):
        values = np.array([r.ndcg for r in results if r.type == kind])
        boots = [rng.choice(values, size=len(values)).mean() for _ in range(1000)]
        summary[kind] = {
            "queries": float(len(values)),
            "ndcg10": round(float(values.mean()), 3),
            "ci95_low": round(float(np.percentile(boots, 2.5)), 3),
            "ci95_high": round(float(np.percentile(boots, 97.5)), 3),
            "random_ndcg10": round(float(np.mean([r.random_ndcg for r in results if r.type == kind])), 3),
        }
    return summary
