"""The pipeline on a real Celery worker (a thread consuming every queue of the test Redis) with the real
offline models and the real database: whole runs, bad files, transient errors, and recovery by
``reconcile``."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from collections_app.models import (
    Artwork,
    ArtworkEmbedding,
    Detail,
    DetailLevel,
    ProcessingStatus,
    ProcessingStep,
    Stage,
    StageStatus,
)
from tests.factories import ArtworkFactory
from tests.workers.fakes import fake_models_fixture  # noqa: F401 - the fixture
from tests.workers.image_server import ImageServer, image_server_fixture  # noqa: F401 - the fixture
from tests.workers.test_imaging import png_header_only
from workers.dispatch import pipeline_enqueue
from workers.queues import Queue
from workers.tasks import STAGE_TASKS

pytestmark = pytest.mark.django_db(transaction=True)

FINISHED = (ProcessingStatus.PROCESSED, ProcessingStatus.FAILED)


@pytest.fixture(scope="module")
def pictures(art_dev: Path) -> list[Path]:
    return sorted((art_dev / "images").glob("*.jpg"))


def stored(data: bytes, name: str = "picture.jpg") -> Artwork:
    artwork = ArtworkFactory()
    artwork.image.save(name, ContentFile(data), save=True)
    return artwork


def wait_finished(ids: list[int], timeout_s: float = 300.0) -> dict[int, str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        statuses = dict(Artwork.objects.filter(pk__in=ids).values_list("pk", "status"))
        if all(s in FINISHED for s in statuses.values()):
            return statuses
        time.sleep(0.2)
    raise AssertionError(f"not finished after {timeout_s} s: {statuses}")


def test_stage_tasks_are_routed_by_resource_and_acknowledged_late() -> None:
    queues = {stage: task.queue for stage, task in STAGE_TASKS.items()}
    assert queues[Stage.FETCH] == Queue.IO
    assert queues[Stage.EMBED] == queues[Stage.ENTITIES] == queues[Stage.CAPTIONS] == Queue.GPU
    assert queues[Stage.GROUPS] == queues[Stage.SCENES] == Queue.CPU
    for task in STAGE_TASKS.values():
        assert task.acks_late and task.reject_on_worker_lost
        assert 0 < task.soft_time_limit < task.time_limit


def test_a_real_picture_is_processed_end_to_end_and_a_rerun_changes_nothing(
    celery_worker, pictures: list[Path]
) -> None:  # type: ignore[no-untyped-def]
    artwork = stored(pictures[3].read_bytes())
    pipeline_enqueue(artwork_ids=[artwork.pk])
    assert wait_finished([artwork.pk]) == {artwork.pk: ProcessingStatus.PROCESSED}

    assert ArtworkEmbedding.objects.filter(artwork=artwork, kind="image").count() == 1
    levels = set(Detail.objects.filter(artwork=artwork).values_list("level", flat=True))
    assert levels == {DetailLevel.ENTITY, DetailLevel.GROUP, DetailLevel.SCENE}
    assert not Detail.objects.filter(artwork=artwork, caption="").exists()
    steps = {s.stage: s for s in ProcessingStep.objects.filter(artwork=artwork)}
    assert set(steps) == set(Stage.values)
    for step in steps.values():
        assert step.status == StageStatus.DONE and step.attempts == 1 and step.model_version
        assert (
            step.started_at
            and step.finished_at
            and step.finished_at >= step.started_at
            and not step.last_error
        )

    details = sorted(Detail.objects.filter(artwork=artwork).values_list("pk", "caption"))
    vectors = sorted(artwork.detail_embeddings.values_list("pk", flat=True))
    pipeline_enqueue(artwork_ids=[artwork.pk])
    assert wait_finished([artwork.pk]) == {artwork.pk: ProcessingStatus.PROCESSED}
    assert sorted(Detail.objects.filter(artwork=artwork).values_list("pk", "caption")) == details
    assert sorted(artwork.detail_embeddings.values_list("pk", flat=True)) == vectors
    assert set(ProcessingStep.objects.filter(artwork=artwork).values_list("attempts", flat=True)) == {2}


def test_bad_files_fail_with_a_clear_error_and_the_worker_goes_on(
    celery_worker, fake_models, pictures: list[Path]
) -> None:  # type: ignore[no-untyped-def]
    jpeg = pictures[5].read_bytes()
    bad = {
        "zero-byte": (b"", "empty"),
        "truncated": (jpeg[: len(jpeg) // 3], "truncated"),
        "corrupt": (jpeg[:20] + b"\x13\x37" * 4000, "damaged|not an image"),
        "pixel bomb": (png_header_only(50_000, 50_000), "decompression bomb"),
        "html as jpeg": (b"<!DOCTYPE html><html><title>Sign in</title></html>", "HTML"),
    }
    artworks = {name: stored(data) for name, (data, _) in bad.items()}
    good = stored(jpeg)
    pipeline_enqueue(artwork_ids=[a.pk for a in artworks.values()] + [good.pk])
    statuses = wait_finished([a.pk for a in artworks.values()] + [good.pk])
    assert statuses.pop(good.pk) == ProcessingStatus.PROCESSED  # the worker was still alive for it
    assert set(statuses.values()) == {ProcessingStatus.FAILED}
    for name, artwork in artworks.items():
        fetch_step = ProcessingStep.objects.get(artwork=artwork, stage=Stage.FETCH)
        assert fetch_step.status == StageStatus.FAILED and fetch_step.attempts == 1, name
        assert re.search(bad[name][1], fetch_step.last_error), (
            name,
            fetch_step.last_error,
        )
        later = ProcessingStep.objects.filter(artwork=artwork).exclude(stage=Stage.FETCH)
        assert set(later.values_list("status", flat=True)) == {StageStatus.PENDING}
        assert not artwork.details.exists() and not artwork.embeddings.exists()


def test_a_transient_fetch_error_is_retried(
    celery_worker, fake_models, settings, image_server: ImageServer, pictures: list[Path]
) -> None:  # type: ignore[no-untyped-def]
    settings.SEMART_FETCH = {**settings.SEMART_FETCH, "allowed_hosts": ["127.0.0.1"]}
    settings.SEMART_PIPELINE = {"max_retries": 3, "retry_base_s": 0.2, "retry_max_s": 1.0}
    url = image_server.route("/flaky.jpg", body=pictures[7].read_bytes(), fail_first=2)
    artwork = ArtworkFactory(image_url=url)
    pipeline_enqueue(artwork_ids=[artwork.pk], stages=[Stage.FETCH])
    deadline = time.monotonic() + 60
    while ProcessingStep.objects.get(artwork=artwork, stage=Stage.FETCH).status != StageStatus.DONE:
        assert time.monotonic() < deadline, ProcessingStep.objects.get(
            artwork=artwork, stage=Stage.FETCH
        ).last_error
        time.sleep(0.1)
    step = ProcessingStep.objects.get(artwork=artwork, stage=Stage.FETCH)
    assert step.attempts == 3 and image_server.routes["/flaky.jpg"].hits == 3
    artwork.refresh_from_db()
    assert artwork.working_image and artwork.width


def test_a_fetch_that_keeps_failing_gives_up_with_the_count(
    celery_worker, fake_models, settings, image_server: ImageServer
) -> None:  # type: ignore[no-untyped-def]
    settings.SEMART_FETCH = {**settings.SEMART_FETCH, "allowed_hosts": ["127.0.0.1"]}
    settings.SEMART_PIPELINE = {"max_retries": 2, "retry_base_s": 0.1, "retry_max_s": 0.5}
    artwork = ArtworkFactory(image_url=image_server.route("/down.jpg", fail_first=100))
    pipeline_enqueue(artwork_ids=[artwork.pk])
    assert wait_finished([artwork.pk], timeout_s=60) == {artwork.pk: ProcessingStatus.FAILED}
    step = ProcessingStep.objects.get(artwork=artwork, stage=Stage.FETCH)
    assert step.attempts == 3 and "gave up after 3 attempts" in step.last_error and "503" in step.last_error


def test_reconcile_requeues_a_stuck_artwork(celery_worker, fake_models, pictures: list[Path]) -> None:  # type: ignore[no-untyped-def]
    artwork = stored(pictures[9].read_bytes())
    # What a lost message leaves behind: stages queued two hours ago, nothing in Redis.
    long_ago = timezone.now() - timedelta(hours=2)
    for stage in Stage.values:
        ProcessingStep.objects.create(
            artwork=artwork, stage=stage, status=StageStatus.QUEUED, queued_at=long_ago
        )
    fresh = stored(pictures[9].read_bytes(), name="other.jpg")  # queued a minute ago: not stuck yet
    for stage in Stage.values:
        ProcessingStep.objects.create(
            artwork=fresh,
            stage=stage,
            status=StageStatus.QUEUED,
            queued_at=timezone.now() - timedelta(minutes=1),
        )

    out = StringIO()
    call_command("reconcile", "--dry-run", "--skip-model-check", stdout=out)
    assert f"{artwork.pk}\tstuck" in out.getvalue() and f"{fresh.pk}\t" not in out.getvalue()
    assert (
        ProcessingStep.objects.get(artwork=artwork, stage=Stage.FETCH).queued_at == long_ago
    )  # dry: untouched

    call_command("reconcile", "--skip-model-check", stdout=StringIO())
    assert wait_finished([artwork.pk]) == {artwork.pk: ProcessingStatus.PROCESSED}
    fresh.refresh_from_db()
    assert fresh.status == ProcessingStatus.PENDING


# --- commands and failure paths that need no worker --------------------------------------------------------


def test_reprocess_queues_the_chosen_stages(redis_client, pictures: list[Path]) -> None:  # type: ignore[no-untyped-def]
    artwork = stored(pictures[0].read_bytes())
    call_command(
        "reprocess", "--ids", str(artwork.pk), "--stages", "captions", "scenes", "--force", stdout=StringIO()
    )
    steps = dict(ProcessingStep.objects.filter(artwork=artwork).values_list("stage", "status"))
    assert steps == {Stage.CAPTIONS: StageStatus.QUEUED, Stage.SCENES: StageStatus.QUEUED}
    assert redis_client.llen(Queue.CPU.value) == 1  # one artwork_process message, waiting for a worker
    with pytest.raises(CommandError, match="no artwork with id"):
        call_command("reprocess", "--ids", str(artwork.pk + 1000), stdout=StringIO())


def test_reconcile_finds_failed_never_queued_and_model_changes(fake_models, pictures: list[Path]) -> None:  # type: ignore[no-untyped-def]
    failed = stored(pictures[0].read_bytes())
    ProcessingStep.objects.create(
        artwork=failed, stage=Stage.FETCH, status=StageStatus.FAILED, last_error="x"
    )
    never = stored(pictures[1].read_bytes())
    done = ArtworkFactory(status=ProcessingStatus.PROCESSED, image_url="https://example.org/a.jpg")
    for stage in Stage.values:
        ProcessingStep.objects.create(artwork=done, stage=stage, status=StageStatus.DONE)
    no_image = ArtworkFactory()  # nothing to process: never listed
    out = StringIO()
    call_command("reconcile", "--dry-run", stdout=out)
    listed = dict(line.split("\t") for line in out.getvalue().splitlines() if "\t" in line)
    assert listed == {
        str(failed.pk): "failed",
        str(never.pk): "never queued",
        str(done.pk): f"no vector from the active embedder {fake_models['embedder'].model_key}",
    }
    assert str(no_image.pk) not in listed
    out = StringIO()
    call_command("reconcile", "--dry-run", "--skip-failed", "--skip-model-check", stdout=out)
    assert set(dict(line.split("\t") for line in out.getvalue().splitlines() if "\t" in line)) == {
        str(never.pk)
    }


def test_vector_indexes_creates_one_index_per_model(pictures: list[Path]) -> None:
    import numpy as np
    from django.db import connection

    from collections_app.vector_indexes import index_name

    artwork = ArtworkFactory()
    for key, dim in (("cmd-test-a@1", 8), ("cmd-test-b@2", 12)):
        ArtworkEmbedding.objects.create(
            artwork=artwork, model_key=key, kind="image", dim=dim, vector=np.ones(dim, dtype=np.float32)
        )
    call_command("vector_indexes", stdout=StringIO())
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'collections_app_artworkembedding'"
        )
        indexes = dict(cursor.fetchall())
    for key, dim in (("cmd-test-a@1", 8), ("cmd-test-b@2", 12)):
        definition = indexes[index_name("artwork", key, "image", dim)]
        assert "hnsw" in definition and key in definition and f"halfvec({dim})" in definition


def test_a_model_that_will_not_load_fails_the_artwork_readably(monkeypatch, pictures: list[Path]) -> None:  # type: ignore[no-untyped-def]
    from tests.workers.fakes import FakeUnloadableDetector
    from workers.pipeline.fetch import stage_fetch
    from workers.tasks import stage_entities_task

    artwork = stored(pictures[2].read_bytes())
    stage_fetch(artwork_id=artwork.pk)
    broken = FakeUnloadableDetector()
    monkeypatch.setattr("workers.inference.registry.get_model", lambda role, key=None: broken)
    result = stage_entities_task.apply(kwargs={"artwork_id": artwork.pk})
    assert result.state == "IGNORED"  # the chain stops; nothing is raised into the worker
    step = ProcessingStep.objects.get(artwork=artwork, stage=Stage.ENTITIES)
    assert step.status == StageStatus.FAILED and "could not be loaded" in step.last_error
    assert "weights file missing" in step.last_error
    artwork.refresh_from_db()
    assert artwork.status == ProcessingStatus.FAILED


def test_a_broker_outage_loses_nothing(monkeypatch, redis_client, pictures: list[Path]) -> None:  # type: ignore[no-untyped-def]
    from kombu.exceptions import OperationalError

    from workers.tasks import artwork_process

    def fake_broker_down(*args: object, **kwargs: object) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    artwork = stored(pictures[4].read_bytes())
    monkeypatch.setattr(artwork_process, "apply_async", fake_broker_down)
    assert pipeline_enqueue(artwork_ids=[artwork.pk]) == 1  # the save that asked for processing succeeds
    assert set(ProcessingStep.objects.filter(artwork=artwork).values_list("status", flat=True)) == {"queued"}
    assert redis_client.llen(Queue.CPU.value) == 0
    monkeypatch.undo()  # the broker is back
    out = StringIO()
    call_command("reconcile", "--stuck-after", "0", "--skip-model-check", stdout=out)
    assert f"{artwork.pk}\tstuck" in out.getvalue()
    assert redis_client.llen(Queue.CPU.value) == 1
