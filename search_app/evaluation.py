"""Runs a labelled query set (the art-dev format: ../shared/datasets/README.md) through the real pipeline.

Each query is scored only inside its judged pool (``all_images``, or ``box_annotated_images`` = images with
boxes), since an unlabelled image is unknown, not irrelevant. The headline is on held-out images: images
the active embedder's head was trained on are removed from every pool.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search_app.evaluation_metrics import bootstrap_ci, mean, query_metrics, random_baseline, region_hit_rate
from search_app.types import SearchQuery

METRICS = ("ndcg@10", "ap", "recall@24", "mrr")


class EvaluationInputError(ValueError):
    """An input file is missing or malformed; the message names the file and line."""


@dataclass
class Dataset:
    queries: list[dict[str, Any]]
    qrels: dict[str, set[str]]
    regions: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)
    all_ids: set[str] = field(default_factory=set)
    box_ids: set[str] = field(default_factory=set)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise EvaluationInputError(f"{path}: no such file")
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise EvaluationInputError(f"{path}:{number}: not JSON ({error.msg})") from None
    return rows


def load_dataset(
    *, queries: Path, qrels: Path, regions: Path | None = None, metadata: Path | None = None
) -> Dataset:
    """Read the files. ``metadata`` (default: metadata.csv beside the queries) gives the pools' images."""
    query_rows = _read_jsonl(queries)
    for number, query_row in enumerate(query_rows, start=1):
        missing = {"qid", "type", "query"} - query_row.keys()
        if missing:
            raise EvaluationInputError(f"{queries}:{number}: missing {', '.join(sorted(missing))}")
    if not qrels.is_file():
        raise EvaluationInputError(f"{qrels}: no such file")
    judged: dict[str, set[str]] = defaultdict(set)
    with qrels.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if not row or row[0] == "qid":
                continue
            if len(row) < 3:
                raise EvaluationInputError(f"{qrels}:{number}: expected qid<TAB>image_id<TAB>relevance")
            try:
                relevance = float(row[2])
            except ValueError:
                raise EvaluationInputError(
                    f"{qrels}:{number}: relevance {row[2]!r} is not a number"
                ) from None
            if relevance > 0:
                judged[row[0]].add(row[1])
    region_map: dict[str, dict[str, list[list[float]]]] = defaultdict(lambda: defaultdict(list))
    if regions is not None:
        for region in _read_jsonl(regions):
            boxes = region_map[region["qid"]][region["image_id"]]
            boxes.append([float(v) for v in region["bbox_rel_xywh"]])
    dataset = Dataset(
        queries=query_rows, qrels=dict(judged), regions={k: dict(v) for k, v in region_map.items()}
    )
    metadata = metadata or queries.parent / "metadata.csv"
    if metadata.is_file():
        with metadata.open(encoding="utf-8", newline="") as handle:
            for record in csv.DictReader(handle):
                image_id = record.get("id") or record.get("source_id") or ""
                dataset.all_ids.add(image_id)
                if int(float(record.get("n_boxes") or 0)) > 0:
                    dataset.box_ids.add(image_id)
    elif any(q.get("judged_pool") == "box_annotated_images" for q in query_rows):
        raise EvaluationInputError(f"{metadata}: needed to know which images have boxes (pass --metadata)")
    return dataset


def query_pool(query: dict[str, Any], dataset: Dataset, catalogue_ids: set[str]) -> set[str]:
    pool = dataset.box_ids if query.get("judged_pool") == "box_annotated_images" else dataset.all_ids
    return (pool or catalogue_ids) & catalogue_ids


def summarise(per_query: list[dict[str, Any]], split: str) -> dict[str, Any]:
    """Means with bootstrap intervals per query type and overall, beside the random baseline."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in per_query:
        if row[split] is not None:
            groups[row["type"]].append(row[split])
            groups["all"].append(row[split])
    summary: dict[str, Any] = {}
    for group, rows in sorted(groups.items()):
        entry: dict[str, Any] = {"queries": len(rows)}
        for name in METRICS:
            values = [r["metrics"][name] for r in rows]
            low, high = bootstrap_ci(values)
            entry[name] = {
                "mean": mean(values),
                "ci95": [low, high],
                "random": mean([r["random"][name] for r in rows]),
            }
        hits = [r["region_hit@10"] for r in rows if r["region_hit@10"] is not None]
        if hits:
            low, high = bootstrap_ci(hits)
            entry["region_hit@10"] = {"mean": mean(hits), "ci95": [low, high], "queries": len(hits)}
        summary[group] = entry
    return summary


def evaluate(
    dataset: Dataset,
    *,
    run_query: Callable[[SearchQuery], Any],
    base_query: SearchQuery,
    catalogue_ids: set[str],
    train_ids: Iterable[str] = (),
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Runs every query; returns {"queries": [...], "metrics": {"held_out": ..., "all": ...}}."""
    from dataclasses import replace

    trained = set(train_ids)
    per_query = []
    for query in dataset.queries:
        response = run_query(replace(base_query, text=query["query"]))
        ranking = [hit.source_id for hit in response.hits]
        regions = {hit.source_id: list(hit.detail.box) for hit in response.hits if hit.detail is not None}
        row: dict[str, Any] = {
            "qid": query["qid"],
            "type": query["type"],
            "ranking": ranking,
            "regions": regions,
            "scores": [hit.score for hit in response.hits],
            "degraded": response.degraded,
        }
        for split, excluded in (("all", set()), ("held_out", trained)):
            pool = query_pool(query, dataset, catalogue_ids) - excluded
            relevant = dataset.qrels.get(query["qid"], set()) & pool
            if not relevant:
                row[split] = None  # nothing relevant left to find in this split
                continue
            in_pool = [item for item in ranking if item in pool]
            truth = {k: v for k, v in dataset.regions.get(query["qid"], {}).items() if k in relevant}
            row[split] = {
                "pool": len(pool),
                "relevant": len(relevant),
                "metrics": query_metrics(in_pool, relevant),
                "random": random_baseline(sorted(pool), relevant),
                "region_hit@10": region_hit_rate(in_pool, regions, truth) if truth else None,
            }
        progress(query["qid"])
        per_query.append(row)
    return {
        "queries": per_query,
        "metrics": {"held_out": summarise(per_query, "held_out"), "all": summarise(per_query, "all")},
        "train_images_left_out": len(trained & catalogue_ids),
    }


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{'type':<13}{'n':>4}  " + "  ".join(f"{m:>22}" for m in METRICS) + f"  {'region hit@10':>14}"]
    for group, entry in summary.items():
        cells = []
        for m in METRICS:
            e = entry[m]
            cells.append(
                f"{e['mean']:.3f} [{e['ci95'][0]:.2f}-{e['ci95'][1]:.2f}] r{e['random']:.3f}".rjust(22)
            )
        region = entry.get("region_hit@10")
        region_cell = f"{region['mean']:.3f} (n={region['queries']})" if region else "-"
        lines.append(f"{group:<13}{entry['queries']:>4}  " + "  ".join(cells) + f"  {region_cell:>14}")
    return "\n".join(lines)
