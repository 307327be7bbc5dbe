"""How the rest of the site asks for processing: rows first, then Celery after the commit."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from collections_app.models import Artwork, ProcessingStatus, ProcessingStep, Stage, StageStatus


def pipeline_enqueue(*, artwork_ids: list[int], force: bool = False, stages: list[str] | None = None) -> int:
    """Mark the artworks' stages queued and send one pipeline task per artwork once the transaction commits.

    Idempotent: queuing an artwork twice runs the pipeline twice, and the second run finds nothing missing.
    """
    from workers.tasks import artwork_process  # tasks import the models; keep this module import-light

    wanted = stages or list(Stage.values)
    ids = list(Artwork.objects.filter(pk__in=artwork_ids).values_list("pk", flat=True))
    now = timezone.now()
    for pk in ids:
        for stage in wanted:
            ProcessingStep.objects.update_or_create(
                artwork_id=pk, stage=stage, defaults={"status": StageStatus.QUEUED, "queued_at": now}
            )
    Artwork.objects.filter(pk__in=ids).update(status=ProcessingStatus.PENDING)
    for pk in ids:
        transaction.on_commit(
            lambda pk=pk: artwork_process.apply_async(kwargs={"artwork_id": pk, "force": force, "stages": stages})
        )
    return len(ids)
