"""Re-queue every artwork the pipeline still owes work: after an outage, a lost message or a model change."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from workers.dispatch import pipeline_enqueue
from workers.pipeline.selectors import artworks_owed_processing


class Command(BaseCommand):
    help = "Re-queue artworks whose processing is missing, failed, or stuck (queued/running past a timeout)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="List them, queue nothing.")
        parser.add_argument(
            "--stuck-after",
            type=float,
            default=30.0,
            metavar="MINUTES",
            help="A stage queued or running longer than this is taken as lost (default 30).",
        )
        parser.add_argument("--skip-failed", action="store_true", help="Leave failed artworks alone.")
        parser.add_argument(
            "--skip-model-check",
            action="store_true",
            help="Do not look for processed artworks lacking a vector from the active embedder.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        embedder_key = None
        if not options["skip_model_check"]:
            from workers.inference.base import ModelLoadError
            from workers.inference.registry import get_embedder  # constructing it loads no weights

            try:
                embedder_key = get_embedder().model_key
            except ModelLoadError as exc:
                self.stderr.write(f"Not checking for vectors of the active embedder: {exc}")
        owed = artworks_owed_processing(
            stuck_after=timedelta(minutes=options["stuck_after"]),
            include_failed=not options["skip_failed"],
            embedder_key=embedder_key,
        )
        for item in owed:
            self.stdout.write(f"{item.artwork_id}\t{item.reason}")
        if options["dry_run"]:
            self.stdout.write(f"{len(owed)} artwork(s) would be re-queued (dry run).")
            return
        queued = pipeline_enqueue(artwork_ids=[o.artwork_id for o in owed]) if owed else 0
        self.stdout.write(self.style.SUCCESS(f"Re-queued {queued} artwork(s)."))
