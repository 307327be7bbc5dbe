"""Evaluation metrics on hand-made rankings; every expected value is worked out in the comment beside it."""

from __future__ import annotations

import math

import pytest

from search_app.evaluation_metrics import (
    average_precision,
    bootstrap_ci,
    iou,
    ndcg_at,
    random_baseline,
    recall_at,
    reciprocal_rank,
    region_hit_rate,
)

RANKING = ["a", "x", "b", "y", "z", "c"]
RELEVANT = {"a", "b", "c", "d"}  # "d" was never retrieved


def test_ndcg_at_10() -> None:
    # DCG = 1/log2(2) + 1/log2(4) + 1/log2(7) = 1 + 0.5 + 0.356207 = 1.856207
    # IDCG (4 relevant) = 1 + 1/log2(3) + 1/log2(4) + 1/log2(5) = 1 + 0.630930 + 0.5 + 0.430677 = 2.561606
    assert ndcg_at(RANKING, RELEVANT, 10) == pytest.approx(1.856207 / 2.561606, abs=1e-6)
    # Only the top 2 count at k=2: DCG = 1, IDCG = 1 + 0.630930
    assert ndcg_at(RANKING, RELEVANT, 2) == pytest.approx(1 / 1.630930, abs=1e-6)
    assert ndcg_at(["a", "b", "c", "d"], RELEVANT) == pytest.approx(1.0)
    assert ndcg_at(["x"], RELEVANT) == 0.0


def test_average_precision_counts_unretrieved_relevant_as_misses() -> None:
    # precision at the hits: a@1 = 1, b@3 = 2/3, c@6 = 3/6; divided by 4 relevant
    assert average_precision(RANKING, RELEVANT) == pytest.approx((1 + 2 / 3 + 0.5) / 4)


def test_recall_and_reciprocal_rank() -> None:
    assert recall_at(RANKING, RELEVANT, 24) == pytest.approx(3 / 4)
    assert recall_at(RANKING, RELEVANT, 2) == pytest.approx(1 / 4)
    assert reciprocal_rank(RANKING, RELEVANT) == 1.0
    assert reciprocal_rank(["x", "y", "b"], RELEVANT) == pytest.approx(1 / 3)
    assert reciprocal_rank(["x"], RELEVANT) == 0.0


def test_iou_and_region_hits() -> None:
    # Overlap of [0,0,0.5,0.5] and [0.25,0.25,0.5,0.5]: 0.25 x 0.25 = 0.0625; union 0.25 + 0.25 - 0.0625
    assert iou([0, 0, 0.5, 0.5], [0.25, 0.25, 0.5, 0.5]) == pytest.approx(0.0625 / 0.4375)
    assert iou([0, 0, 0.1, 0.1], [0.5, 0.5, 0.1, 0.1]) == 0.0
    truth = {"a": [[0.0, 0.0, 0.5, 0.5]], "b": [[0.5, 0.5, 0.5, 0.5]]}
    returned = {"a": [0.05, 0.05, 0.5, 0.5], "b": [0.0, 0.0, 0.2, 0.2]}
    # a: IoU = 0.2025 / (0.25 + 0.25 - 0.2025) = 0.68 -> hit; b: no overlap -> miss
    assert region_hit_rate(RANKING, returned, truth) == pytest.approx(0.5)
    assert region_hit_rate(["x"], returned, truth) is None


def test_random_baseline_matches_the_closed_form_for_mrr() -> None:
    # One relevant item among 4: expected reciprocal rank = (1 + 1/2 + 1/3 + 1/4) / 4 = 0.520833
    baseline = random_baseline(["a", "b", "c", "d"], {"a"}, trials=4000, seed=1)
    assert baseline["mrr"] == pytest.approx(25 / 48, abs=0.02)
    assert baseline["recall@24"] == 1.0  # the whole pool fits in 24


def test_bootstrap_interval_brackets_the_mean() -> None:
    values = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    low, high = bootstrap_ci(values, samples=1000)
    assert low < 0.5 < high
    assert low >= 0.0 and high <= 1.0
    assert all(math.isnan(v) for v in bootstrap_ci([]))
