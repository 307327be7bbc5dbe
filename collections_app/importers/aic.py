"""A small public-domain (CC0) sample from the Art Institute of Chicago's API, for a demo with no images.

Needs internet; images stay on AIC's IIIF server (https://www.artic.edu/iiif/2) and the pipeline fetches them.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

from collections_app.importers.base import ImportItem
from collections_app.importers.remote import FetchRefused, fetch_document
from collections_app.services import ArtworkData

AIC_SEARCH = "https://api.artic.edu/api/v1/artworks/search"
AIC_FIELDS = (
    "id,title,artist_title,date_display,date_start,date_end,medium_display,dimensions,credit_line,image_id,"
    "classification_title,main_reference_number,place_of_origin"
)
DEFAULT_IIIF = "https://www.artic.edu/iiif/2"


def aic_sample_url(*, limit: int, query: str = "painting") -> str:
    params = {
        "q": query,
        "query[term][is_public_domain]": "true",
        "limit": str(limit),
        "fields": AIC_FIELDS,
    }
    return f"{AIC_SEARCH}?{urlencode(params)}"


def plan_aic_sample(*, limit: int = 24, query: str = "painting", source: str = "aic") -> list[ImportItem]:
    """Items for up to ``limit`` public-domain artworks with images. Raises FetchRefused without network."""
    raw = fetch_document(aic_sample_url(limit=limit, query=query))
    try:
        payload = json.loads(raw)
        records = payload["data"]
    except (ValueError, KeyError, TypeError) as exc:
        raise FetchRefused(f"the AIC API answered something unexpected: {exc}") from exc
    iiif = str((payload.get("config") or {}).get("iiif_url") or DEFAULT_IIIF).rstrip("/")
    items = []
    for record in records:
        if not isinstance(record, dict) or not record.get("image_id") or not record.get("id"):
            continue
        begin, end = record.get("date_start"), record.get("date_end")
        if isinstance(begin, int) and isinstance(end, int) and begin > end:
            begin, end = end, begin
        data = ArtworkData(
            source=source,
            source_id=str(record["id"]),
            title=record.get("title") or "",
            artists=[record["artist_title"]] if record.get("artist_title") else [],
            display_date=record.get("date_display") or "",
            date_begin=begin if isinstance(begin, int) else None,
            date_end=end if isinstance(end, int) else None,
            medium=record.get("medium_display") or "",
            dimensions=record.get("dimensions") or "",
            credit_line=record.get("credit_line") or "",
            classification=record.get("classification_title") or "",
            accession_number=record.get("main_reference_number") or "",
            collection="Art Institute of Chicago",
            licence="CC0 (Art Institute of Chicago, public domain)",
            source_url=f"https://www.artic.edu/artworks/{record['id']}",
            iiif_url=f"{iiif}/{record['image_id']}",
            extra={"place_of_origin": record["place_of_origin"]} if record.get("place_of_origin") else {},
        )
        items.append(ImportItem(where=f"AIC artwork {record['id']}", data=data))
    return items
