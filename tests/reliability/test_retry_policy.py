"""The retry policy of the pipeline's tasks: late acknowledgement, redelivery when a worker dies, explicit
queues and time limits, and exponential backoff (base * 2**retries, capped) for transient errors only."""

from __future__ import annotations

import json

import pytest
import redis.exceptions
from celery.exceptions import Ignore, Retry
from django.db import OperationalError

from collections_app.models import ProcessingStep, Stage, StageStatus
from tests.factories import ArtworkFactory
from workers.inference.base import ModelLoadError
from workers.pipeline.errors import (
    TRANSIENT_ERRORS,
    PermanentStageError,
    StorageFullError,
    TransientFetchError,
)
from workers.queues import Queue
from workers.tasks import STAGE_TASKS, artwork_process, stage_fetch_task


def test_every_stage_is_acknowledged_late_redelivered_if_its_worker_dies_and_time_limited() -> None:
    for stage, task in STAGE_TASKS.items():
        assert task.acks_late and task.reject_on_worker_lost, stage
        assert task.queue in {q.value for q in Queue}, stage
        assert 0 < task.soft_time_limit < task.time_limit, stage
    assert artwork_process.acks_late


def test_only_errors_a_retry_can_cure_are_transient() -> None:
    for error in (
        TransientFetchError("503"),
        StorageFullError("full"),
        OperationalError("server closed the connection"),
        redis.exceptions.ConnectionError("refused"),
        TimeoutError(),
    ):
        assert isinstance(error, TRANSIENT_ERRORS), error
    for permanent in (
        PermanentStageError("corrupt"),
        ModelLoadError("missing"),
        ValueError("bug"),
        OSError(13, "denied"),
    ):
        assert not isinstance(permanent, TRANSIENT_ERRORS), permanent


@pytest.mark.django_db
@pytest.mark.parametrize(("retries", "countdown"), [(0, 10.0), (1, 20.0), (2, 40.0), (4, 160.0), (7, 600.0)])
def test_transient_errors_back_off_exponentially_up_to_the_cap(  # type: ignore[no-untyped-def]
    retries: int, countdown: float, settings, redis_client
) -> None:
    settings.SEMART_PIPELINE = {"max_retries": 10, "retry_base_s": 10.0, "retry_max_s": 600.0}
    artwork = ArtworkFactory()
    ProcessingStep.objects.create(artwork=artwork, stage=Stage.FETCH, status=StageStatus.RUNNING)
    stage_fetch_task.push_request(
        id=f"retry-test-{retries}",
        retries=retries,
        args=(),
        kwargs={"artwork_id": artwork.pk},
        called_directly=False,
    )
    try:
        with pytest.raises(Retry) as raised:
            stage_fetch_task._retry_or_fail(TransientFetchError("HTTP 503"), artwork_id=artwork.pk)
    finally:
        stage_fetch_task.pop_request()
    assert raised.value.when == countdown
    # The retry is a real message on the broker, due after the countdown, counting the attempt.
    body = redis_client.lindex(Queue.IO.value, 0)
    headers = json.loads(body)["headers"]
    assert headers["retries"] == retries + 1 and headers["eta"]
    step = ProcessingStep.objects.get(artwork=artwork, stage=Stage.FETCH)
    assert (
        step.status == StageStatus.QUEUED and step.last_error == "will retry: TransientFetchError: HTTP 503"
    )


@pytest.mark.django_db
def test_after_the_last_retry_the_stage_fails_with_the_count(settings, redis_client) -> None:  # type: ignore[no-untyped-def]
    settings.SEMART_PIPELINE = {"max_retries": 5, "retry_base_s": 10.0, "retry_max_s": 600.0}
    artwork = ArtworkFactory()
    ProcessingStep.objects.create(artwork=artwork, stage=Stage.FETCH, status=StageStatus.RUNNING)
    stage_fetch_task.push_request(id="retry-test-last", retries=5, args=(), kwargs={"artwork_id": artwork.pk})
    try:
        with pytest.raises(Ignore):
            stage_fetch_task._retry_or_fail(TransientFetchError("HTTP 503"), artwork_id=artwork.pk)
    finally:
        stage_fetch_task.pop_request()
    step = ProcessingStep.objects.get(artwork=artwork, stage=Stage.FETCH)
    assert step.status == StageStatus.FAILED
    assert step.last_error == "gave up after 6 attempts: TransientFetchError: HTTP 503"
    assert redis_client.llen(Queue.IO.value) == 0
