"""Processing state: the artwork row lock, per-stage ProcessingStep bookkeeping, and the working image.

``ProcessingStep.model_version`` is the record of what a stage's stored output was computed with. It is set
when a stage finishes, cleared when it fails or when an upstream stage replaced its inputs, and a stage whose
recorded version equals the active one has nothing to do: that is what makes a re-run a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from PIL import Image

from collections_app.models import Artwork, ProcessingStatus, ProcessingStep, Stage, StageStatus
from workers.pipeline.errors import PermanentStageError

logger = logging.getLogger(__name__)

STAGE_ORDER: tuple[str, ...] = tuple(Stage.values)  # fetch, embed, entities, groups, scenes, captions
ERROR_MAX_CHARS = 2000


def artwork_lock(artwork_id: int) -> Artwork:
    """The artwork row, locked until the surrounding transaction ends, so two runs never interleave."""
    return Artwork.objects.select_for_update(of=("self",)).get(pk=artwork_id)


def step_version(artwork_id: int, stage: str) -> str:
    return (
        ProcessingStep.objects.filter(artwork_id=artwork_id, stage=stage)
        .values_list("model_version", flat=True)
        .first()
        or ""
    )


def invalidate_stages(artwork_id: int, stages: Iterable[str]) -> None:
    """An upstream stage replaced these stages' inputs: their stored output no longer counts as done."""
    ProcessingStep.objects.filter(artwork_id=artwork_id, stage__in=list(stages)).update(model_version="")


def working_image_open(artwork: Artwork) -> Image.Image:
    if not artwork.working_image:
        raise PermanentStageError("the image has not been fetched yet (run the fetch stage first)")
    try:
        with artwork.working_image.open("rb") as handle:
            image = Image.open(handle)
            image.load()
    except FileNotFoundError as exc:
        raise PermanentStageError(
            f"the working copy {artwork.working_image.name} is missing: re-run fetch"
        ) from exc
    return image.convert("RGB")


def step_begin(*, artwork_id: int, stage: str, task_id: str = "") -> None:
    now = timezone.now()
    step, _ = ProcessingStep.objects.get_or_create(artwork_id=artwork_id, stage=stage)
    ProcessingStep.objects.filter(pk=step.pk).update(
        status=StageStatus.RUNNING,
        attempts=F("attempts") + 1,
        started_at=now,
        finished_at=None,
        task_id=task_id[:64],
    )
    Artwork.objects.filter(pk=artwork_id).exclude(status=ProcessingStatus.PROCESSING).update(
        status=ProcessingStatus.PROCESSING
    )


def step_finish(*, artwork_id: int, stage: str, model_version: str) -> None:
    ProcessingStep.objects.filter(artwork_id=artwork_id, stage=stage).update(
        status=StageStatus.DONE, model_version=model_version[:200], last_error="", finished_at=timezone.now()
    )


def step_retrying(*, artwork_id: int, stage: str, error: str) -> None:
    ProcessingStep.objects.filter(artwork_id=artwork_id, stage=stage).update(
        status=StageStatus.QUEUED,
        last_error=f"will retry: {error}"[:ERROR_MAX_CHARS],
        queued_at=timezone.now(),
    )


@transaction.atomic
def step_fail(*, artwork_id: int, stage: str, error: str) -> None:
    """The stage failed for good: the artwork is failed with a readable error; later stages will not run."""
    now = timezone.now()
    ProcessingStep.objects.filter(artwork_id=artwork_id, stage=stage).update(
        status=StageStatus.FAILED, last_error=error[:ERROR_MAX_CHARS], model_version="", finished_at=now
    )
    later = STAGE_ORDER[STAGE_ORDER.index(stage) + 1 :] if stage in STAGE_ORDER else ()
    ProcessingStep.objects.filter(
        artwork_id=artwork_id, stage__in=later, status__in=[StageStatus.QUEUED, StageStatus.RUNNING]
    ).update(status=StageStatus.PENDING, last_error=f"not run: the {stage} stage failed")
    Artwork.objects.filter(pk=artwork_id).update(status=ProcessingStatus.FAILED)


def artwork_finalise(*, artwork_id: int) -> str:
    """Processed when every stage is done; failed if one failed; pending when stages were never run (a run of
    some stages only, on an artwork never processed whole); otherwise left as it is (work still queued)."""
    statuses = dict(ProcessingStep.objects.filter(artwork_id=artwork_id).values_list("stage", "status"))
    if StageStatus.FAILED in statuses.values():
        status = ProcessingStatus.FAILED
    elif set(statuses.values()) <= {StageStatus.DONE}:
        status = ProcessingStatus.PROCESSED if set(STAGE_ORDER) <= set(statuses) else ProcessingStatus.PENDING
    else:
        return str(Artwork.objects.filter(pk=artwork_id).values_list("status", flat=True).first() or "")
    Artwork.objects.filter(pk=artwork_id).update(status=status)
    return str(status)
