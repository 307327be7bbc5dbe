"""Writes to the catalogue. Importers, the admin, the API and the workers all go through here."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import transaction

from collections_app.iconography import is_valid_notation, normalise_notation
from collections_app.models import Artist, Artwork, Detail, ProcessingStatus, ReviewState

ARTWORK_TEXT_FIELDS = (
    "accession_number",
    "title",
    "display_date",
    "medium",
    "classification",
    "collection",
    "dimensions",
    "description",
    "credit_line",
    "licence",
    "source_url",
    "iiif_url",
    "image_url",
)


@dataclass
class ArtworkData:
    """One catalogue record as an importer read it. Empty strings mean "not given"."""

    source: str
    source_id: str
    title: str = ""
    artists: list[str] = field(default_factory=list)
    accession_number: str = ""
    display_date: str = ""
    date_begin: int | None = None
    date_end: int | None = None
    medium: str = ""
    classification: str = ""
    collection: str = ""
    dimensions: str = ""
    description: str = ""
    credit_line: str = ""
    licence: str = ""
    source_url: str = ""
    iiif_url: str = ""
    image_url: str = ""
    iconclass: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class UpsertResult:
    artwork: Artwork
    created: bool
    image_changed: bool
    warnings: list[str] = field(default_factory=list)


_YEAR = re.compile(r"(?<!\d)(-?\d{3,4})(?!\d)")


def parse_year_range(display_date: str) -> tuple[int | None, int | None]:
    """Best-effort years from a display date: "1503-1506", "c. 1650", "ca. 1480 to 1490", "15th century"."""
    text = (display_date or "").strip().lower()
    if not text:
        return None, None
    century = re.search(r"(\d{1,2})(st|nd|rd|th)\s+century", text)
    if century:
        start = (int(century.group(1)) - 1) * 100
        return start, start + 99
    years = [int(y) for y in _YEAR.findall(text)]
    if not years:
        return None, None
    return min(years), max(years)


def artist_get_or_create(*, name: str, source: str = "local", source_id: str = "") -> Artist:
    name = " ".join(name.split())
    if not name:
        raise ValidationError("An artist needs a name.")
    if source_id:
        artist, _ = Artist.objects.get_or_create(
            source=source, source_id=source_id, defaults={"name": name, "sort_name": name}
        )
        if artist.name != name:
            artist.name = name
            artist.save(update_fields=["name", "updated_at"])
        return artist
    artist, _ = Artist.objects.get_or_create(
        source=source, name=name, source_id="", defaults={"sort_name": name}
    )
    return artist


def _split_iconclass(notations: list[str]) -> tuple[list[str], list[str]]:
    valid: list[str] = []
    invalid: list[str] = []
    for n in notations:
        n = normalise_notation(n)
        if not n:
            continue
        (valid if is_valid_notation(n) else invalid).append(n)
    return list(dict.fromkeys(valid)), invalid


@transaction.atomic
def artwork_upsert(
    *,
    data: ArtworkData,
    image_bytes: bytes | None = None,
    image_name: str = "",
    queue_processing: bool = True,
) -> UpsertResult:
    """Create or update the artwork identified by (source, source_id).

    Re-importing the same record updates it in place. Fields the record leaves empty do not erase what a
    cataloger entered. A new or changed image (by content hash or URL) resets processing and, unless
    ``queue_processing`` is false, queues it after the transaction commits. Unknown ICONCLASS notations are
    dropped with a warning rather than failing the whole record.
    """
    if not data.source_id.strip():
        raise ValidationError("A record needs an id (source_id).")
    warnings: list[str] = []
    iconclass, invalid = _split_iconclass(data.iconclass)
    if invalid:
        warnings.append(f"unknown ICONCLASS notation(s) ignored: {', '.join(invalid)}")

    artwork = Artwork.objects.select_for_update().filter(source=data.source, source_id=data.source_id).first()
    created = artwork is None
    if artwork is None:
        artwork = Artwork(source=data.source, source_id=data.source_id)
    old_image_key = (artwork.image_sha256, artwork.iiif_url, artwork.image_url)

    for name in ARTWORK_TEXT_FIELDS:
        value = (getattr(data, name) or "").strip()
        if value or created:
            setattr(artwork, name, value)
    if data.display_date and data.date_begin is None and data.date_end is None:
        data.date_begin, data.date_end = parse_year_range(data.display_date)
    if data.date_begin is not None or created:
        artwork.date_begin = data.date_begin
    if data.date_end is not None or created:
        artwork.date_end = data.date_end
    if iconclass or created:
        artwork.iconclass = iconclass
    if data.extra:
        artwork.extra = {**artwork.extra, **data.extra}

    if image_bytes is not None:
        digest = hashlib.sha256(image_bytes).hexdigest()
        if digest != artwork.image_sha256:
            _image_check(image_bytes)  # before anything is written: a broken file never replaces a good one
            suffix = Path(image_name).suffix.lower() or ".jpg"
            safe_stem = re.sub(r"[^\w.-]+", "_", f"{data.source}_{data.source_id}")[:150]
            artwork.image.save(f"{safe_stem}{suffix}", ContentFile(image_bytes), save=False)
            artwork.image_sha256 = digest

    image_changed = created or old_image_key != (artwork.image_sha256, artwork.iiif_url, artwork.image_url)
    if image_changed:
        artwork.status = ProcessingStatus.PENDING
    artwork.full_clean(exclude=["image", "thumbnail", "working_image"], validate_unique=False)
    artwork.save()

    if data.artists:
        artwork.artists.set(
            [artist_get_or_create(name=n, source=data.source) for n in data.artists if n.strip()]
        )

    if image_changed and queue_processing and artwork.has_image_source():
        artwork_queue_processing(artwork_ids=[artwork.pk], force=not created)
    return UpsertResult(artwork=artwork, created=created, image_changed=image_changed, warnings=warnings)


def _image_check(image_bytes: bytes) -> None:
    from collections_app.importers.images import ImageRejected, image_bytes_validated

    try:
        image_bytes_validated(image_bytes)
    except ImageRejected as exc:
        raise ValidationError({"image": [str(exc)]}) from exc


def artwork_queue_processing(
    *, artwork_ids: list[int], force: bool = False, stages: list[str] | None = None
) -> int:
    """Queue the vision pipeline for these artworks once the current transaction commits.

    ``force`` recomputes stages already done (after the image changed); otherwise a run only fills in what is
    missing for the active models. Returns how many artworks were queued.
    """
    from workers.dispatch import pipeline_enqueue  # the catalogue knows the workers only through this call

    return pipeline_enqueue(artwork_ids=artwork_ids, force=force, stages=stages)


def detail_review(
    *,
    detail: Detail,
    state: str,
    label: str | None = None,
    caption: str | None = None,
    box: tuple[float, float, float, float] | None = None,
) -> Detail:
    """A cataloger approves, corrects or hides a detail. Corrections are kept for training the head."""
    if state not in ReviewState.values:
        raise ValidationError(f"Unknown review state {state!r}.")
    changed = False
    if label is not None and label != detail.label:
        detail.label, changed = label, True
    if caption is not None and caption != detail.caption:
        detail.caption, changed = caption, True
    if box is not None:
        detail.x, detail.y, detail.w, detail.h = box
        changed = True
    detail.review_state = ReviewState.CORRECTED if changed and state == ReviewState.APPROVED else state
    detail.full_clean(exclude=["parents"])
    detail.save()
    return detail
