"""Train the offline embedder's projection head on art-dev (and, optionally, on reviewed details).

    python manage.py train_head                                  # writes $SEMART_MODEL_DIR/offline-head.npz
    # the head shipped with the code:
    python manage.py train_head --out workers/inference/offline/assets/head.npz

A head written to $SEMART_MODEL_DIR/offline-head.npz is used by this installation's embedder in place of
the shipped one; its new version changes the embedder's model_key, so the pipeline re-embeds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from workers.inference.offline.embedder import LOCAL_HEAD_NAME
from workers.inference.offline.training import add_dataset_argument


class Command(BaseCommand):
    help = "Train the offline projection head (EfficientNet -> MiniLM space); report held-out metrics."

    def add_arguments(self, parser: CommandParser) -> None:
        add_dataset_argument(parser)
        parser.add_argument(
            "--holdout", type=float, default=0.3, help="Fraction of pictures held out (by id hash)."
        )
        parser.add_argument(
            "--out", type=Path, default=None, help=f"Default: $SEMART_MODEL_DIR/{LOCAL_HEAD_NAME}"
        )
        parser.add_argument(
            "--include-reviewed", action="store_true", help="Also learn from approved/corrected details."
        )
        parser.add_argument(
            "--steps", type=int, default=None, help="Optimiser steps (default: training.py's)."
        )
        parser.add_argument(
            "--limit",
            type=int,
            default=None,
            help="Use only N pictures, spread over the dataset (quick runs).",
        )
        parser.add_argument(
            "--evaluate",
            action="store_true",
            help="Also measure text -> picture nDCG@10 on the held-out pictures.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from workers.inference.offline.training import train_head

        dataset: Path = options["dataset"]
        if not 0.0 <= options["holdout"] < 1.0:
            raise CommandError("--holdout must be in [0, 1)")
        if not (dataset / "metadata.jsonl").is_file():
            raise CommandError(f"{dataset} has no metadata.jsonl")
        out: Path = options["out"] or Path(settings.SEMART_MODEL_DIR) / LOCAL_HEAD_NAME
        extra = {"steps": options["steps"]} if options["steps"] else {}

        def progress(done: int, total: int) -> None:
            if done == total or done % 50 == 0:
                self.stderr.write(f"features: {done}/{total} pictures")

        cache_dir = Path(settings.SEMART_DATA_DIR) / "cache" / "offline-features"
        run = train_head(
            dataset=dataset,
            holdout=options["holdout"],
            include_reviewed=options["include_reviewed"],
            cache_dir=cache_dir,
            limit=options["limit"],
            progress=progress,
            **extra,
        )
        run.head.save(out)
        if options["evaluate"]:
            from workers.inference.offline.evaluation import search_ndcg, summarise

            run.metrics["held_out_search"] = summarise(search_ndcg(run.head, dataset, cache_dir=cache_dir))
        metrics = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in run.metrics.items()}
        self.stdout.write(json.dumps({"out": str(out), "version": run.head.version, **metrics}, indent=1))
