"""python manage.py import_iiif MANIFEST [MANIFEST ...] [--single] [--source NAME]: files or http(s) URLs."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from collections_app.importers.base import ImportItem
from collections_app.importers.catalogue import CatalogueError
from collections_app.importers.cli import ImportCommand
from collections_app.importers.iiif import load_manifest, plan_iiif_import
from collections_app.importers.remote import FetchRefused


class Command(ImportCommand):
    help = "Import IIIF Presentation manifests (2.x, 3.0): an artwork per canvas, or per manifest (--single)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("manifests", nargs="+", help="Manifest file paths or http(s) URLs.")
        parser.add_argument(
            "--single", action="store_true", help="One artwork per manifest (its first image)."
        )
        self.add_import_arguments(parser, default_source="iiif")

    def handle(self, *args: Any, **options: Any) -> None:
        items: list[ImportItem] = []
        notes: list[str] = []
        for location in options["manifests"]:
            try:
                manifest, name = load_manifest(location)
                plan = plan_iiif_import(
                    manifest, name=name, source=options["source"], single=options["single"]
                )
            except (CatalogueError, FetchRefused) as exc:
                if len(options["manifests"]) == 1:
                    raise CommandError(str(exc)) from exc
                # With several manifests a bad one is a failed row, like a bad CSV line.
                items.append(ImportItem(where=location, error=str(exc)))
                continue
            items.extend(plan.items)
            notes.extend(plan.notes)
        self.import_and_report(items, options, notes=notes)
