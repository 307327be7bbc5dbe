"""Reads about processing: which artworks the pipeline still owes work (for ``manage.py reconcile``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from collections_app.models import (
    Artwork,
    ArtworkEmbedding,
    EmbeddingKind,
    ProcessingStatus,
    ProcessingStep,
    StageStatus,
)


@dataclass(frozen=True)
class Owed:
    artwork_id: int
    reason: str


def artworks_owed_processing(
    *, stuck_after: timedelta, include_failed: bool = True, embedder_key: str | None = None
) -> list[Owed]:
    """Artworks whose processing is missing, failed, or stuck queued/running for longer than ``stuck_after``
    (a lost message: Redis restarted empty, a worker killed before it acknowledged), and, given the active
    embedder's key, processed artworks with no whole-image vector from it (the model changed)."""
    cutoff = timezone.now() - stuck_after
    with_image = Artwork.objects.filter(~Q(image="") | ~Q(iiif_url="") | ~Q(image_url=""))
    steps = ProcessingStep.objects.filter(artwork=OuterRef("pk"))
    owed: dict[int, str] = {}

    def add(queryset, reason: str) -> None:  # type: ignore[no-untyped-def]
        for pk in queryset.values_list("pk", flat=True):
            owed.setdefault(pk, reason)

    add(
        with_image.annotate(
            stuck=Exists(
                steps.filter(
                    Q(status=StageStatus.QUEUED, queued_at__lt=cutoff)
                    | Q(status=StageStatus.RUNNING, started_at__lt=cutoff)
                )
            )
        ).filter(stuck=True),
        f"stuck queued or running for more than {stuck_after}",
    )
    if include_failed:
        add(
            with_image.annotate(failed=Exists(steps.filter(status=StageStatus.FAILED))).filter(
                Q(failed=True) | Q(status=ProcessingStatus.FAILED)
            ),
            "failed",
        )
    add(
        with_image.annotate(has_steps=Exists(steps))
        .filter(has_steps=False)
        .exclude(status=ProcessingStatus.PROCESSED),
        "never queued",
    )
    # Every stage recorded but never started or re-queued: e.g. queued rows whose queued_at was never set.
    add(
        with_image.exclude(status=ProcessingStatus.PROCESSED)
        .annotate(
            active=Exists(steps.filter(status__in=[StageStatus.QUEUED, StageStatus.RUNNING])),
            failed=Exists(steps.filter(status=StageStatus.FAILED)),
            has_steps=Exists(steps),
        )
        .filter(active=False, failed=False, has_steps=True),
        "interrupted (nothing queued, not finished)",
    )
    if embedder_key:
        add(
            with_image.filter(status=ProcessingStatus.PROCESSED).exclude(
                Exists(
                    ArtworkEmbedding.objects.filter(
                        artwork=OuterRef("pk"), model_key=embedder_key, kind=EmbeddingKind.IMAGE
                    )
                )
            ),
            f"no vector from the active embedder {embedder_key}",
        )
    return [Owed(artwork_id=pk, reason=reason) for pk, reason in sorted(owed.items())]
