"""Import the National Gallery of Art's open data:

manage.py import_nga --objects objects.csv --images published_images.csv [--limit N] [--classification X]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from collections_app.importers.catalogue import CatalogueError
from collections_app.importers.cli import ImportCommand
from collections_app.importers.nga import plan_nga_import


class Command(ImportCommand):
    help = (
        "Import the National Gallery of Art's open data (objects.csv + published_images.csv); images by IIIF."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--objects", type=Path, required=True, help="NGA objects.csv")
        parser.add_argument("--images", type=Path, required=True, help="NGA published_images.csv")
        parser.add_argument("--limit", type=int, default=None, help="Import at most this many objects.")
        parser.add_argument(
            "--classification", default=None, help="Only this classification (e.g. Painting)."
        )
        self.add_import_arguments(parser, default_source="nga")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["limit"] is not None and options["limit"] < 1:
            raise CommandError("--limit must be at least 1.")
        try:
            plan = plan_nga_import(
                objects=options["objects"],
                images=options["images"],
                source=options["source"],
                limit=options["limit"],
                classification=options["classification"],
            )
        except CatalogueError as exc:
            raise CommandError(str(exc)) from exc
        self.import_and_report(plan.items, options, notes=plan.notes)
