"""Where the region shown for a detail query goes wrong: for every detail query of a labelled set and every
relevant picture with true boxes, whether the query names a label the picture's details carry, and how
often each way of choosing among them lands on a true box (IoU >= 0.3). Prints JSON, split by pictures
held out of the offline head's training and the rest.

    SEMART_DATA_DIR=var/eval .venv/bin/python benchmarks/region_choice.py [--dataset DIR (art-dev)]

Run it on an instance with the set imported and processed (docs/evaluation.md). Unlike ``manage.py
evaluate`` it looks at every relevant picture, not only those the search ranks in its top 10: it measures
the choice of region, not the ranking.

Rules compared: ``most_confident`` (what the site shows: ``reranking.named_detail``), ``consensus`` (the
detail with the label that the label's other details overlap most, weighted by their confidence),
``largest`` and ``smallest`` (by area), ``closest_to_query`` (the detail whose crop vector is nearest the
query's), ``best_of_label`` (an oracle: any detail with the label named hits) and ``best_of_all`` (an
oracle over every detail of the picture). Beside them, the placements (collections_app.models.Placement):
``placement_named``, the query names a label placed in the picture, and ``placement``, that placement hits;
and ``shown``, what an artworks search shows (``search_app.pipeline.shown_region``: the placement, else
the most confident detail with the label named), counted over every pair, and per query (``shown``,
``shown_held_out`` of ``held_out_pairs``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "semart_site.settings.local")

from workers.inference.offline.training import add_dataset_argument  # noqa: E402 (after the path)

RULES = (
    "shown",
    "placement_named",
    "placement",
    "most_confident",
    "consensus",
    "largest",
    "smallest",
    "closest_to_query",
    "best_of_label",
    "best_of_all",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_argument(parser)
    args = parser.parse_args()

    import django

    django.setup()
    from collections_app.models import Artwork, Detail, DetailEmbedding
    from search_app.evaluation_metrics import REGION_IOU, iou
    from search_app.pipeline import page_placements
    from search_app.query_encoding import encode_text_here
    from search_app.reranking import named_detail, named_placement, route_label
    from search_app.retrieval import halfvec_rows
    from workers.inference.registry import get_embedder

    lines = (args.dataset / "queries.jsonl").read_text().splitlines()
    queries = [json.loads(line) for line in lines if line.strip()]
    truth: dict[str, dict[str, list[list[float]]]] = defaultdict(lambda: defaultdict(list))
    for line in (args.dataset / "qrels_regions.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            truth[row["qid"]][row["image_id"]].append(row["bbox_rel_xywh"])
    embedder = get_embedder()
    trained = set(getattr(getattr(embedder, "head", None), "train_ids", []) or [])
    artwork_of = dict(Artwork.objects.values_list("source_id", "pk"))

    splits = ("held_out", "trained")
    counts: dict[str, dict[str, Any]] = {
        s: {"pairs": 0, "label_named": 0, **dict.fromkeys(RULES, 0)} for s in splits
    }
    per_query: dict[str, dict[str, int]] = defaultdict(
        lambda: {"pairs": 0, "label_named": 0, "most_confident": 0, "shown": 0, "held_out_pairs": 0,
                 "shown_held_out": 0}
    )  # fmt: skip
    for query in queries:
        if query["type"] != "detail":
            continue
        query_vector, _ = encode_text_here(query["query"])
        for image_id, boxes in truth[query["qid"]].items():
            artwork_id = artwork_of.get(image_id)
            if artwork_id is None:
                continue
            details = list(
                Detail.objects.visible()
                .filter(artwork_id=artwork_id)
                .exclude(label="")
                .values_list("id", "label", "confidence", "x", "y", "w", "h")
            )

            def on_thing(box: Sequence[float], boxes: list[list[float]] = boxes) -> bool:
                return any(iou(box, true) >= REGION_IOU for true in boxes)

            def hits(d: tuple[Any, ...]) -> bool:
                return on_thing(d[3:7])

            held_out = image_id not in trained
            split = counts["held_out" if held_out else "trained"]
            split["pairs"] += 1
            mine = per_query[query["qid"]]
            mine["pairs"] += 1
            mine["held_out_pairs"] += held_out

            split["best_of_all"] += any(hits(d) for d in details)
            placements = page_placements([artwork_id]).get(artwork_id, [])
            placed = named_placement(query["query"], placements)
            placed_hit = placed is not None and on_thing(placed[1])
            if placed is not None:
                split["placement_named"] += 1
                split["placement"] += placed_hit
            label = route_label(query["query"], [d[1] for d in details])
            if label is None:
                _count_shown(placed_hit, split, mine, held_out)
                continue
            split["label_named"] += 1
            per_query[query["qid"]]["label_named"] += 1
            named = [d for d in details if d[1] == label]
            chosen = named_detail(query["query"], [(d[0], d[1], float(d[2])) for d in details])
            shown = next(d for d in named if d[0] == chosen)
            split["most_confident"] += hits(shown)
            _count_shown(placed_hit if placed is not None else hits(shown), split, mine, held_out)

            def support(d: tuple[Any, ...], named: list[tuple[Any, ...]] = named) -> float:
                return sum(
                    float(e[2]) * iou((d[3], d[4], d[5], d[6]), (e[3], e[4], e[5], e[6])) for e in named
                )

            split["consensus"] += hits(max(named, key=lambda d: (support(d), -d[0])))
            split["largest"] += hits(max(named, key=lambda d: (d[5] * d[6], -d[0])))
            split["smallest"] += hits(min(named, key=lambda d: (d[5] * d[6], d[0])))
            per_query[query["qid"]]["most_confident"] += hits(shown)
            split["best_of_label"] += any(hits(d) for d in named)
            rows = DetailEmbedding.objects.filter(
                detail_id__in=[d[0] for d in named], model_key=embedder.model_key, kind="image"
            )
            vectors = dict(halfvec_rows(rows.order_by(), "detail_id"))
            if vectors:
                q = np.asarray(query_vector, dtype=np.float32)
                nearest = max(
                    (d for d in named if d[0] in vectors),
                    key=lambda d: float(vectors[d[0]] @ q) / float(np.linalg.norm(vectors[d[0]]) or 1.0),
                )
                split["closest_to_query"] += hits(nearest)
    for split in counts.values():
        n = max(split["pairs"], 1)
        split["fractions"] = {k: round(split[k] / n, 3) for k in ("label_named", *RULES)}
    print(json.dumps({"benchmark": "region_choice", "model_key": embedder.model_key, "splits": counts,
                      "per_query": per_query}, indent=1))  # fmt: skip


def _count_shown(hit: bool, split: dict[str, Any], mine: dict[str, int], held_out: bool) -> None:
    """Whether what an artworks search shows for a pair hits: counted for its split and its query."""
    split["shown"] += hit
    mine["shown"] += hit
    mine["shown_held_out"] += hit and held_out


if __name__ == "__main__":
    main()
