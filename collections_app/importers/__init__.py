"""Bulk imports into the catalogue: a folder of images with an optional CSV, NGA open data, IIIF manifests.

Each importer turns its source into ``ImportItem``s (one record each, or the reason it cannot be one);
``run_import`` writes them through ``collections_app.services.artwork_upsert`` and counts what happened, so
every importer reports created / updated / unchanged / failed the same way.
"""

from collections_app.importers.base import ImportItem, ImportReport, RowError, run_import

__all__ = ["ImportItem", "ImportReport", "RowError", "run_import"]
