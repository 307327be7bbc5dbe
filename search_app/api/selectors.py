"""Reads of the partner API: filtered artwork lists, details, processing status, detail crops."""

from __future__ import annotations

import io
from datetime import datetime

from django.db.models import QuerySet

from collections_app.models import Artwork, Detail, ProcessingStatus, ProcessingStep, Stage

CROP_LONG_SIDE = 1024


def artwork_list_filtered(
    *,
    artist: str | None = None,
    date_from: int | None = None,
    date_to: int | None = None,
    classification: str | None = None,
    medium: str | None = None,
    updated_since: datetime | None = None,
) -> QuerySet[Artwork]:
    qs = Artwork.objects.with_artists().filter_catalogue(
        artist=artist, year_from=date_from, year_to=date_to, classification=classification, medium=medium
    )
    if updated_since is not None:
        qs = qs.filter(updated_at__gte=updated_since)
    return qs


def artwork_get_full(*, pk: int) -> Artwork:
    return Artwork.objects.with_artists().get(pk=pk)


def detail_get(*, pk: int) -> Detail:
    """A visible detail: hidden ones are a cataloger's rejections, not something partners should see."""
    return Detail.objects.visible().select_related("artwork").get(pk=pk)


def artwork_steps(*, artwork: Artwork) -> list[ProcessingStep]:
    order = {stage: i for i, stage in enumerate(Stage.values)}
    return sorted(artwork.steps.all(), key=lambda s: order.get(s.stage, len(order)))


def artwork_processing_done(*, artwork: Artwork) -> bool:
    return artwork.status in (ProcessingStatus.PROCESSED, ProcessingStatus.FAILED)


class NoImageToCrop(Exception):
    pass


def detail_crop_jpeg(*, detail: Detail, quality: int = 88) -> bytes:
    """The detail's box cut from the working image (or the original), as JPEG.

    The box is axis-aligned: ``angle`` is ignored, as a rotated crop would need a background colour for
    the corners and partners asked for "the region", not a reprojection.
    """
    from PIL import Image  # Pillow is light, but only this endpoint needs it

    artwork = detail.artwork
    field = artwork.working_image or artwork.image
    if not field:
        raise NoImageToCrop("The artwork has no stored image yet (processing may still be fetching it).")
    with field.open("rb") as fh, Image.open(fh) as opened:
        img = opened.convert("RGB")
        width, height = img.size
        left, top = round(detail.x * width), round(detail.y * height)
        right = min(width, max(left + 1, round((detail.x + detail.w) * width)))
        bottom = min(height, max(top + 1, round((detail.y + detail.h) * height)))
        crop = img.crop((left, top, right, bottom))
        crop.thumbnail((CROP_LONG_SIDE, CROP_LONG_SIDE))
        buf = io.BytesIO()
        crop.save(buf, "JPEG", quality=quality)
    return buf.getvalue()
