"""Evaluate the search pipeline on a labelled query set (the art-dev format).

    python manage.py evaluate --queries Q.jsonl --qrels Q.tsv [--regions R.jsonl] [--level artworks]
        [--json OUT] [--depth 100] [--no-rerank] [--alpha 0.5] [--no-iconclass] [--no-lexical]

Runs in this process (encoder and reranker included): an evaluation is not a web request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from search_app.types import LEVELS


class Command(BaseCommand):
    help = "Run a labelled query set through the search pipeline and report nDCG@10, AP, recall@24, MRR."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--queries", type=Path, required=True, help="queries.jsonl")
        parser.add_argument("--qrels", type=Path, required=True, help="qrels.tsv (qid, image_id, relevance)")
        parser.add_argument("--regions", type=Path, help="qrels_regions.jsonl, for region hits")
        parser.add_argument("--metadata", type=Path, help="metadata.csv (default: beside --queries)")
        parser.add_argument("--level", choices=LEVELS, default="artworks")
        parser.add_argument("--json", type=Path, dest="json_out", help="write rankings and metrics here")
        parser.add_argument(
            "--depth", type=int, default=100, help="ranking depth (the candidate count follows)"
        )
        parser.add_argument("--no-rerank", action="store_true")
        parser.add_argument("--alpha", type=float, help="rerank weight (default: settings.SEARCH['alpha'])")
        parser.add_argument("--no-iconclass", action="store_true", help="without the ICONCLASS expansion leg")
        parser.add_argument("--no-lexical", action="store_true", help="without the full-text leg")

    def handle(self, *args: Any, **options: Any) -> None:
        from collections_app.models import Artwork
        from search_app.evaluation import EvaluationInputError, evaluate, format_summary, load_dataset
        from search_app.pipeline import search_sync
        from search_app.types import SearchQuery
        from workers.inference.registry import get_embedder

        if not 1 <= options["depth"] <= 1000:
            raise CommandError("--depth must be 1-1000")
        if options["alpha"] is not None and not 0.0 <= options["alpha"] <= 1.0:
            raise CommandError("--alpha must be within 0-1")
        try:
            dataset = load_dataset(
                queries=options["queries"],
                qrels=options["qrels"],
                regions=options["regions"],
                metadata=options["metadata"],
            )
        except EvaluationInputError as error:
            raise CommandError(str(error)) from None
        catalogue_ids = set(Artwork.objects.values_list("source_id", flat=True))
        if not catalogue_ids & (dataset.all_ids or {i for ids in dataset.qrels.values() for i in ids}):
            raise CommandError("none of the judged images is in the catalogue: import the dataset first")
        embedder = get_embedder()
        head = getattr(embedder, "head", None)
        train_ids = list(getattr(head, "train_ids", []) or [])
        base = SearchQuery(
            level=options["level"],
            limit=options["depth"],
            depth=options["depth"],
            rerank=not options["no_rerank"],
            alpha=options["alpha"],
            threshold=-1.0,  # rankings go to --depth; the page threshold is a display choice
            lexical=not options["no_lexical"],
            iconclass=not options["no_iconclass"],
        )
        result = evaluate(
            dataset,
            run_query=lambda q: search_sync(q, in_process=True),
            base_query=base,
            catalogue_ids=catalogue_ids,
            train_ids=train_ids,
            progress=lambda qid: (
                self.stderr.write(f"  {qid}", ending="\n") if options["verbosity"] > 1 else None
            ),
        )
        result["settings"] = {
            "embedder": embedder.model_key,
            "level": options["level"],
            "depth": options["depth"],
            "rerank": not options["no_rerank"],
            "alpha": options["alpha"],
            "lexical": not options["no_lexical"],
            "iconclass": not options["no_iconclass"],
            "train_ids": len(train_ids),
        }
        degraded = sorted({q["degraded"] for q in result["queries"] if q["degraded"]})
        self.stdout.write(
            f"embedder {embedder.model_key}; {len(train_ids)} training images left out of the headline"
        )
        for split, title in (("held_out", "HELD-OUT images (headline)"), ("all", "ALL images")):
            self.stdout.write(f"\n{title}: mean [95% bootstrap CI] r<random baseline>")
            self.stdout.write(format_summary(result["metrics"][split]))
        if degraded:
            self.stdout.write(self.style.WARNING(f"\ndegraded answers: {'; '.join(degraded)}"))
        if options["json_out"]:
            options["json_out"].parent.mkdir(parents=True, exist_ok=True)
            options["json_out"].write_text(json.dumps(result, indent=1))
            self.stdout.write(f"\nwrote {options['json_out']}")
