"""How the rest of the site asks for processing: rows first, then Celery after the commit."""

from __future__ import annotations

import functools
import logging

from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from collections_app.models import Artwork, ProcessingStatus, ProcessingStep, Stage, StageStatus

logger = logging.getLogger(__name__)


def _send(artwork_id: int, force: bool, stages: list[str] | None) -> None:
    from workers.tasks import artwork_process

    try:
        artwork_process.apply_async(kwargs={"artwork_id": artwork_id, "force": force, "stages": stages})
    except BrokerError:
        # The rows already say "queued"; `manage.py reconcile` re-sends what stays queued once the broker is
        # back, so an outage delays the work instead of losing it or failing the save that asked for it.
        logger.warning("broker unreachable: artwork %s stays queued for `manage.py reconcile`", artwork_id)


def pipeline_enqueue(*, artwork_ids: list[int], force: bool = False, stages: list[str] | None = None) -> int:
    """Mark the artworks' stages queued and send one pipeline task per artwork once the transaction commits.

    Idempotent: queuing an artwork twice runs the pipeline twice, and the second run finds nothing missing.
    """
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
        transaction.on_commit(functools.partial(_send, pk, force, stages))
    return len(ids)
