"""manage.py import_images DIR [--catalog FILE.csv] [--source NAME] [--process/--no-process] [--wait]"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from collections_app.importers.catalogue import CatalogueError
from collections_app.importers.cli import ImportCommand
from collections_app.importers.folder import plan_folder_import


class Command(ImportCommand):
    help = (
        "Import a folder of images (jpg, png, tif, webp; recursive), optionally with a CSV catalogue "
        "keyed by id or file name. Re-running updates the same artworks."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("folder", type=Path)
        parser.add_argument("--catalog", "--catalogue", type=Path, default=None, help="CSV catalogue.")
        parser.add_argument(
            "--id-column",
            default=None,
            help="Catalogue column holding the record id (default: id, source_id).",
        )
        parser.add_argument(
            "--include-uncatalogued",
            action="store_true",
            help="With --catalog, also import images the catalogue does not list, under their file name.",
        )
        self.add_import_arguments(parser, default_source="local")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            plan = plan_folder_import(
                options["folder"],
                catalog=options["catalog"],
                source=options["source"],
                id_column=options["id_column"],
                include_uncatalogued=options["include_uncatalogued"],
            )
        except CatalogueError as exc:
            raise CommandError(str(exc)) from exc
        if not plan.items:
            raise CommandError(f"No images found in {options['folder']}.")
        self.import_and_report(plan.items, options, notes=plan.notes)
