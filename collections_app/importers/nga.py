"""The National Gallery of Art's open data (github.com/NationalGalleryOfArt/opendata): ``objects.csv`` for the
records, ``published_images.csv`` for their IIIF images. Images stay on NGA's IIIF server; the pipeline
fetches them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from collections_app.importers.base import ImportItem
from collections_app.importers.catalogue import CatalogueError, CsvStream
from collections_app.services import ArtworkData

OBJECT_FIELDS = {
    "accessionnum": "accession_number",
    "title": "title",
    "displaydate": "display_date",
    "medium": "medium",
    "dimensions": "dimensions",
    "classification": "classification",
    "creditline": "credit_line",
}
# Columns read into fields of their own (or deliberately dropped), so they are not copied into extra.
CONSUMED = frozenset(
    {*OBJECT_FIELDS, "objectid", "beginyear", "endyear", "attribution", "attributioninverted"}
)
IMAGE_FIELDS = ("uuid", "iiifurl", "iiifthumburl", "width", "height")
NGA_OBJECT_PAGE = "https://www.nga.gov/collection/art-object-page.{objectid}.html"
NGA_LICENCE = "CC0 (NGA open access)"


@dataclass
class NgaPlan:
    items: list[ImportItem]
    notes: list[str] = field(default_factory=list)


def _year(value: str) -> int | None:
    try:
        return int(float(value)) if value.strip() else None
    except ValueError:
        return None


def primary_images(path: Path) -> dict[str, dict[str, str]]:
    """objectid -> its primary published image row (uuid, iiifurl, iiifthumburl, width, height)."""
    table = CsvStream(path)
    missing = {"depictstmsobjectid", "iiifurl", "viewtype"} - set(table.columns)
    if missing:
        raise CatalogueError(f"{path.name} lacks NGA column(s): {', '.join(sorted(missing))}")
    images: dict[str, dict[str, str]] = {}
    for row in table:
        if row.error:
            continue
        objectid = row.values.get("depictstmsobjectid", "")
        primary = row.values.get("viewtype", "").lower() == "primary" and row.values.get("iiifurl")
        # Only the fields a record keeps: the file lists every image NGA has published.
        if objectid and primary and objectid not in images:
            images[objectid] = {k: row.values.get(k, "") for k in IMAGE_FIELDS}
    return images


def plan_nga_import(
    *,
    objects: Path,
    images: Path,
    source: str = "nga",
    limit: int | None = None,
    classification: str | None = None,
) -> NgaPlan:
    """One item per object with a primary published image (filtered, then limited)."""
    table = CsvStream(objects)
    if "objectid" not in table.columns:
        raise CatalogueError(f"{objects.name} has no 'objectid' column: is it NGA's objects.csv?")
    primaries = primary_images(images)
    notes = [f"{objects.name}: {w}" for w in table.warnings]
    items: list[ImportItem] = []
    without_image = 0
    for row in table:
        if limit is not None and len(items) >= limit:
            break
        where = f"{objects.name} line {row.line}"
        if row.error:
            items.append(ImportItem(where=where, error=row.error))
            continue
        values = row.values
        if classification and values.get("classification", "").lower() != classification.lower():
            continue
        objectid = values.get("objectid", "")
        if not objectid:
            items.append(ImportItem(where=where, error="empty objectid"))
            continue
        image = primaries.get(objectid)
        if image is None:
            without_image += 1
            continue
        data = ArtworkData(source=source, source_id=objectid)
        for column, attr in OBJECT_FIELDS.items():
            setattr(data, attr, values.get(column, ""))
        data.date_begin, data.date_end = _year(values.get("beginyear", "")), _year(values.get("endyear", ""))
        if data.date_begin is not None and data.date_end is not None and data.date_begin > data.date_end:
            data.date_begin, data.date_end = data.date_end, data.date_begin
        attribution = values.get("attribution", "")
        data.artists = [a.strip() for a in attribution.split(";") if a.strip()]
        data.source_url = NGA_OBJECT_PAGE.format(objectid=objectid)
        data.licence = NGA_LICENCE
        data.collection = "National Gallery of Art, Washington"
        data.iiif_url = image["iiifurl"].rstrip("/").removesuffix("/info.json")
        data.extra = {k: v for k, v in values.items() if k not in CONSUMED and v}
        data.extra["nga_image"] = {
            k: image[k] for k in ("uuid", "iiifthumburl", "width", "height") if image.get(k)
        }
        items.append(ImportItem(where=where, data=data))
    if without_image:
        notes.append(f"{without_image} object(s) have no primary published image and were skipped")
    return NgaPlan(items=items, notes=notes)
