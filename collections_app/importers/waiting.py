"""``--wait``: poll the database until the imported artworks are processed or failed.

The pipeline runs in Celery workers; the database is the one place both sides see, so waiting needs no
result backend and survives a worker restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db.models import Count

from collections_app.models import Artwork, ProcessingStatus, ProcessingStep, StageStatus

FINISHED = (ProcessingStatus.PROCESSED, ProcessingStatus.FAILED)


@dataclass
class FailedArtwork:
    artwork_id: int
    name: str
    errors: list[str]  # "stage: last error", one per failed stage

    def __str__(self) -> str:
        return f"{self.name} (id {self.artwork_id}): {'; '.join(self.errors) or 'failed'}"


@dataclass
class WaitOutcome:
    total: int
    processed: int = 0
    failed: list[FailedArtwork] = field(default_factory=list)
    timed_out: bool = False

    @property
    def unfinished(self) -> int:
        return self.total - self.processed - len(self.failed)


def processing_tally(*, artwork_ids: list[int]) -> dict[str, int]:
    rows = Artwork.objects.filter(pk__in=artwork_ids).values("status").annotate(n=Count("id")).order_by()
    return {row["status"]: row["n"] for row in rows}


def processing_failures_of(*, artwork_ids: list[int]) -> list[FailedArtwork]:
    failed = {
        a.pk: FailedArtwork(artwork_id=a.pk, name=str(a) if a.title else a.source_id, errors=[])
        for a in Artwork.objects.filter(pk__in=artwork_ids, status=ProcessingStatus.FAILED).order_by("pk")
    }
    steps = ProcessingStep.objects.filter(artwork_id__in=list(failed), status=StageStatus.FAILED).order_by(
        "id"
    )
    for step in steps:
        failed[step.artwork_id].errors.append(f"{step.stage}: {step.last_error.strip() or 'failed'}")
    return list(failed.values())


def wait_for_processing(
    *,
    artwork_ids: list[int],
    timeout_s: float | None = None,
    poll_s: float = 2.0,
    on_progress: Callable[[int, int], None] | None = None,
) -> WaitOutcome:
    """Block until every artwork with an image is processed or failed, or ``timeout_s`` passes.

    ``on_progress(finished, failed)`` is called after each poll.
    """
    # An artwork with nothing to look at is never processed: waiting for it would only run into the timeout.
    ids = list(
        Artwork.objects.filter(pk__in=list(dict.fromkeys(artwork_ids)))
        .exclude(image="", iiif_url="", image_url="")
        .values_list("pk", flat=True)
    )
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    outcome = WaitOutcome(total=len(ids))
    while True:
        tally = processing_tally(artwork_ids=ids)
        done = sum(tally.get(s, 0) for s in FINISHED)
        if on_progress:
            on_progress(done, tally.get(ProcessingStatus.FAILED, 0))
        if done >= len(ids):
            break
        if deadline is not None and time.monotonic() >= deadline:
            outcome.timed_out = True
            break
        time.sleep(poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic())))
    outcome.processed = processing_tally(artwork_ids=ids).get(ProcessingStatus.PROCESSED, 0)
    outcome.failed = processing_failures_of(artwork_ids=ids)
    return outcome
