"""Queue the vision pipeline again for chosen artworks, some stages or all, recomputing with --force."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from collections_app.models import Artwork, Stage
from workers.dispatch import pipeline_enqueue

BATCH = 500


class Command(BaseCommand):
    help = "Re-run pipeline stages. Without --force only what is missing for the active models is computed."

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--all", action="store_true", help="Every artwork with an image.")
        which.add_argument("--ids", type=int, nargs="+", metavar="ID", help="These artworks.")
        parser.add_argument(
            "--stages", nargs="+", choices=Stage.values, help="Only these stages (default: all)."
        )
        parser.add_argument("--force", action="store_true", help="Recompute even what is up to date.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["all"]:
            ids = [
                a.pk
                for a in Artwork.objects.only("pk", "image", "iiif_url", "image_url")
                if a.has_image_source()
            ]
        else:
            ids = list(Artwork.objects.filter(pk__in=options["ids"]).values_list("pk", flat=True))
            missing = sorted(set(options["ids"]) - set(ids))
            if missing:
                raise CommandError(f"no artwork with id(s) {', '.join(map(str, missing))}; nothing queued")
        queued = 0
        for start in range(0, len(ids), BATCH):
            queued += pipeline_enqueue(
                artwork_ids=ids[start : start + BATCH], force=options["force"], stages=options["stages"]
            )
        stages = ", ".join(options["stages"] or ["all stages"])
        self.stdout.write(
            self.style.SUCCESS(
                f"Queued {queued} artwork(s) for {stages}{' (forced)' if options['force'] else ''}."
            )
        )
