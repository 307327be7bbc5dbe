"""Reads from the catalogue."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from collections_app.models import Artwork, Detail, ProcessingStep, StageStatus


def artwork_list_recent(*, limit: int = 24) -> list[Artwork]:
    return list(Artwork.objects.with_artists().order_by("-created_at")[:limit])


def artwork_get(*, pk: int) -> Artwork:
    return Artwork.objects.with_artists().get(pk=pk)


def artwork_details(
    *, artwork: Artwork, level: str | None = None, include_hidden: bool = False
) -> QuerySet[Detail]:
    qs = artwork.details.all() if include_hidden else artwork.details.visible()
    return qs.at_level(level).order_by("level", "-confidence")


def processing_counts() -> dict[str, dict[str, int]]:
    """{stage: {status: count}} over every artwork: the jobs view's table."""
    table: dict[str, dict[str, int]] = {}
    for row in ProcessingStep.objects.values("stage", "status").annotate(n=Count("id")).order_by():
        table.setdefault(row["stage"], {})[row["status"]] = row["n"]
    return table


def processing_failures(*, limit: int = 200) -> QuerySet[ProcessingStep]:
    return (
        ProcessingStep.objects.filter(status=StageStatus.FAILED)
        .select_related("artwork")
        .order_by("-updated_at")[:limit]
    )
