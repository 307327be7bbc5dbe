"""Ranking metrics with binary relevance, computed inside a query's judged pool.

``ranking`` lists item ids best first and has already been restricted to the judged pool; ``relevant`` is
the set of relevant ids in that pool. Relevant items the ranking never reached count as misses.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

REGION_IOU = 0.3


def dcg(gains: Sequence[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def ndcg_at(ranking: Sequence[str], relevant: set[str], k: int = 10) -> float:
    if not relevant:
        return 0.0
    gains = [1.0 if item in relevant else 0.0 for item in ranking[:k]]
    ideal = dcg([1.0] * min(k, len(relevant)))
    return dcg(gains) / ideal


def average_precision(ranking: Sequence[str], relevant: set[str]) -> float:
    if not relevant:
        return 0.0
    found, total = 0, 0.0
    for i, item in enumerate(ranking, start=1):
        if item in relevant:
            found += 1
            total += found / i
    return total / len(relevant)


def recall_at(ranking: Sequence[str], relevant: set[str], k: int = 24) -> float:
    if not relevant:
        return 0.0
    return len(set(ranking[:k]) & relevant) / len(relevant)


def reciprocal_rank(ranking: Sequence[str], relevant: set[str]) -> float:
    for i, item in enumerate(ranking, start=1):
        if item in relevant:
            return 1.0 / i
    return 0.0


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x, y, w, h] boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def region_hit_rate(
    ranking: Sequence[str],
    regions: Mapping[str, Sequence[float]],
    truth: Mapping[str, Sequence[Sequence[float]]],
    *,
    k: int = 10,
    threshold: float = REGION_IOU,
) -> float | None:
    """Of the region-judged relevant items in the top k, the fraction whose returned box overlaps a true box
    with IoU >= threshold (an item returned without a box misses). None when there is nothing to judge."""
    judged = [item for item in ranking[:k] if item in truth]
    if not judged:
        return None
    hits = sum(
        1
        for item in judged
        if item in regions and any(iou(regions[item], box) >= threshold for box in truth[item])
    )
    return hits / len(judged)


def query_metrics(ranking: Sequence[str], relevant: set[str]) -> dict[str, float]:
    return {
        "ndcg@10": ndcg_at(ranking, relevant, 10),
        "ap": average_precision(ranking, relevant),
        "recall@24": recall_at(ranking, relevant, 24),
        "mrr": reciprocal_rank(ranking, relevant),
    }


def random_baseline(
    pool: Sequence[str], relevant: set[str], *, trials: int = 200, seed: int = 0
) -> dict[str, float]:
    """Expected metrics of a random order of the pool (Monte Carlo, fixed seed)."""
    rng = random.Random(seed)
    items = list(pool)
    sums: dict[str, float] = {}
    for _ in range(trials):
        rng.shuffle(items)
        for name, value in query_metrics(items, relevant).items():
            sums[name] = sums.get(name, 0.0) + value
    return {name: total / trials for name, total in sums.items()}


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def bootstrap_ci(
    values: Sequence[float], *, samples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over queries."""
    if not values:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(samples))
    low = means[int((1 - level) / 2 * samples)]
    high = means[min(samples - 1, int((1 + level) / 2 * samples))]
    return (low, high)
