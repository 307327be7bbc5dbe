"""Celery tasks of the vision pipeline. Thin: each takes primary keys, records its step, and calls one stage
service from workers/pipeline/. One chain per artwork; stages run on queues by resource so GPU, CPU and
network workers scale apart.

Failure policy: only TRANSIENT_ERRORS (network timeouts, 429/5xx, database and Redis connection errors) are
retried, with exponential backoff; anything else marks the step and the artwork failed with a message a
cataloger can read, stops the chain, and leaves the worker running.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Task, chain, shared_task
from celery.exceptions import Ignore, Retry, SoftTimeLimitExceeded
from django.conf import settings

from collections_app.models import Artwork, Stage
from workers.inference.base import ModelLoadError
from workers.pipeline import captions, embed, entities, fetch, groups, scenes
from workers.pipeline.errors import TRANSIENT_ERRORS, PermanentStageError
from workers.pipeline.state import (
    STAGE_ORDER,
    artwork_finalise,
    step_begin,
    step_fail,
    step_finish,
    step_retrying,
)
from workers.queues import Queue

logger = logging.getLogger(__name__)

PIPELINE_DEFAULTS = {"max_retries": 5, "retry_base_s": 10.0, "retry_max_s": 600.0}


def pipeline_setting(name: str) -> Any:
    return getattr(settings, "SEMART_PIPELINE", {}).get(name, PIPELINE_DEFAULTS[name])


class StageTask(Task):
    """One pipeline stage for one artwork. Late acknowledgement plus reject-on-worker-lost: a worker killed
    mid-stage leaves the message to be delivered again, and the stage's idempotency makes that safe."""

    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    # The pipeline's own limit (SEMART_PIPELINE["max_retries"]) decides, in _retry_or_fail. Celery's default
    # of 3 would re-raise the error at the 4th retry and leave the step "queued" with nobody to run it.
    max_retries = None
    stage: str = ""

    def run_stage(
        self, service: Callable[..., str], *, artwork_id: int, force: bool, finalise: bool = False
    ) -> str:
        stage = self.stage
        try:
            if not Artwork.objects.filter(pk=artwork_id).exists():
                logger.info("artwork %s was deleted before its %s stage ran", artwork_id, stage)
                raise Ignore()
            step_begin(artwork_id=artwork_id, stage=stage, task_id=self.request.id or "")
            version = service(artwork_id=artwork_id, force=force)
            step_finish(artwork_id=artwork_id, stage=stage, model_version=version)
            if finalise:
                # The chain's last stage sets the artwork's status itself: a separate task would wait behind
                # every other artwork's work on its queue, and the artwork would look unfinished meanwhile.
                artwork_finalise(artwork_id=artwork_id)
            return version
        except (Ignore, Retry):
            raise
        except TRANSIENT_ERRORS as exc:
            self._retry_or_fail(exc, artwork_id=artwork_id)
        except PermanentStageError as exc:
            self._fail(artwork_id, str(exc))
        except ModelLoadError as exc:
            self._fail(artwork_id, f"the {stage} model could not be loaded: {exc}")
        except SoftTimeLimitExceeded:
            self._fail(
                artwork_id, f"the {stage} stage took longer than its limit of {self.soft_time_limit} s"
            )
        except Exception as exc:
            # A bug, not bad input: keep the trace in the log, tell the cataloger what happened in one line.
            logger.exception("stage %s failed for artwork %s", stage, artwork_id)
            self._fail(artwork_id, f"internal error in the {stage} stage ({type(exc).__name__}: {exc})")
        raise AssertionError("unreachable")  # pragma: no cover

    def _retry_or_fail(self, exc: BaseException, *, artwork_id: int) -> None:
        error = f"{type(exc).__name__}: {exc}"
        retries = int(self.request.retries or 0)
        if retries >= int(pipeline_setting("max_retries")):
            self._fail(artwork_id, f"gave up after {retries + 1} attempts: {error}")
        countdown = min(
            float(pipeline_setting("retry_base_s")) * 2**retries, float(pipeline_setting("retry_max_s"))
        )
        try:
            step_retrying(artwork_id=artwork_id, stage=self.stage, error=error)
        except TRANSIENT_ERRORS:
            logger.warning("could not record the retry of %s for artwork %s", self.stage, artwork_id)
        raise self.retry(exc=exc, countdown=countdown)

    def _fail(self, artwork_id: int, error: str) -> None:
        logger.warning("artwork %s: %s stage failed: %s", artwork_id, self.stage, error)
        step_fail(artwork_id=artwork_id, stage=self.stage, error=error)
        # Ignore ends this chain without running the later stages and without an error in the worker.
        raise Ignore()


def _stage_options(stage: str, queue: Queue, soft: int, hard: int) -> dict[str, Any]:
    return {
        "bind": True,
        "base": StageTask,
        "name": f"workers.stage_{stage}",
        "queue": queue.value,
        "stage": stage,
        "soft_time_limit": soft,
        "time_limit": hard,
    }


@shared_task(**_stage_options(Stage.FETCH, Queue.IO, soft=90, hard=120))
def stage_fetch_task(self: StageTask, artwork_id: int, force: bool = False, finalise: bool = False) -> str:
    return self.run_stage(fetch.stage_fetch, artwork_id=artwork_id, force=force, finalise=finalise)


@shared_task(**_stage_options(Stage.EMBED, Queue.GPU, soft=300, hard=360))
def stage_embed_task(self: StageTask, artwork_id: int, force: bool = False, finalise: bool = False) -> str:
    return self.run_stage(embed.stage_embed, artwork_id=artwork_id, force=force, finalise=finalise)


@shared_task(**_stage_options(Stage.ENTITIES, Queue.GPU, soft=300, hard=360))
def stage_entities_task(self: StageTask, artwork_id: int, force: bool = False, finalise: bool = False) -> str:
    return self.run_stage(entities.stage_entities, artwork_id=artwork_id, force=force, finalise=finalise)


@shared_task(**_stage_options(Stage.GROUPS, Queue.CPU, soft=60, hard=90))
def stage_groups_task(self: StageTask, artwork_id: int, force: bool = False, finalise: bool = False) -> str:
    return self.run_stage(groups.stage_groups, artwork_id=artwork_id, force=force, finalise=finalise)


@shared_task(**_stage_options(Stage.SCENES, Queue.CPU, soft=60, hard=90))
def stage_scenes_task(self: StageTask, artwork_id: int, force: bool = False, finalise: bool = False) -> str:
    return self.run_stage(scenes.stage_scenes, artwork_id=artwork_id, force=force, finalise=finalise)


@shared_task(**_stage_options(Stage.CAPTIONS, Queue.GPU, soft=300, hard=360))
def stage_captions_task(self: StageTask, artwork_id: int, force: bool = False, finalise: bool = False) -> str:
    return self.run_stage(captions.stage_captions, artwork_id=artwork_id, force=force, finalise=finalise)


STAGE_TASKS = {
    Stage.FETCH: stage_fetch_task,
    Stage.EMBED: stage_embed_task,
    Stage.ENTITIES: stage_entities_task,
    Stage.GROUPS: stage_groups_task,
    Stage.SCENES: stage_scenes_task,
    Stage.CAPTIONS: stage_captions_task,
}


def pipeline_chain(*, artwork_id: int, force: bool = False, stages: list[str] | None = None) -> Any:
    """The stages asked for, in pipeline order; the last one also sets the artwork's final status."""
    unknown = set(stages or ()) - set(STAGE_ORDER)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; stages are {', '.join(STAGE_ORDER)}")
    wanted = [s for s in STAGE_ORDER if not stages or s in stages]
    return chain(
        *[
            STAGE_TASKS[s].si(artwork_id=artwork_id, force=force, finalise=(i == len(wanted) - 1))  # type: ignore[index]
            for i, s in enumerate(wanted)
        ]
    )


@shared_task(
    name="workers.artwork_process", queue=Queue.CPU.value, acks_late=True, soft_time_limit=30, time_limit=60
)
def artwork_process(artwork_id: int, force: bool = False, stages: list[str] | None = None) -> None:
    """Start one artwork's pipeline: a chain of stage tasks, each on the queue of the resource it needs."""
    pipeline_chain(artwork_id=artwork_id, force=force, stages=stages).apply_async()
