"""Query logic that belongs to the catalogue's models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import models

if TYPE_CHECKING:
    from collections_app.models import Artwork, Detail  # noqa: F401


class ArtworkQuerySet(models.QuerySet["Artwork"]):
    def with_artists(self) -> ArtworkQuerySet:
        return self.prefetch_related("artists")

    def filter_catalogue(
        self,
        *,
        artist: str | None = None,
        year_from: int | None = None,
        year_to: int | None = None,
        classification: str | None = None,
        medium: str | None = None,
        collection: str | None = None,
        source: str | None = None,
        status: str | None = None,
    ) -> ArtworkQuerySet:
        """Catalogue filters shared by the admin, the pages, the API and search.

        A date range matches artworks whose [date_begin, date_end] overlaps it.
        """
        qs = self
        if artist:
            qs = qs.filter(artists__name__icontains=artist)
        if year_from is not None:
            qs = qs.filter(
                models.Q(date_end__gte=year_from) | models.Q(date_end__isnull=True, date_begin__gte=year_from)
            )
        if year_to is not None:
            qs = qs.filter(date_begin__lte=year_to)
        if classification:
            qs = qs.filter(classification__iexact=classification)
        if medium:
            qs = qs.filter(medium__icontains=medium)
        if collection:
            qs = qs.filter(collection__icontains=collection)
        if source:
            qs = qs.filter(source=source)
        if status:
            qs = qs.filter(status=status)
        return qs.distinct() if artist else qs

    def processed(self) -> ArtworkQuerySet:
        return self.filter(status="processed")


class DetailQuerySet(models.QuerySet["Detail"]):
    def visible(self) -> DetailQuerySet:
        """What visitors see: everything a cataloger has not hidden."""
        return self.exclude(review_state="hidden")

    def reviewed_for_training(self) -> DetailQuerySet:
        return self.filter(review_state__in=["approved", "corrected"])

    def at_level(self, level: str | None) -> DetailQuerySet:
        return self.filter(level=level) if level else self

    def boxes(self) -> list[dict[str, Any]]:
        return [
            {
                "id": d.pk,
                "level": d.level,
                "box": [d.x, d.y, d.w, d.h],
                "label": d.label,
                "caption": d.caption,
            }
            for d in self
        ]
