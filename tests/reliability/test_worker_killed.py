"""A worker killed mid-task (SIGKILL, as the OOM killer or a lost node does it): a real Celery worker process
on the test database and its own Redis database runs a real artwork with the real offline models; it is
killed while a stage runs; a new worker starts; ``manage.py reconcile`` finds the stage left ``running`` and
re-queues the artwork, and it finishes. The broker is a Redis server of the test's own, so no other worker
on the machine takes the test's messages. With the Redis transport a message taken by a worker that died is
only handed out again after the visibility timeout (an hour), which is why reconcile exists."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command

from collections_app.models import Artwork, ProcessingStatus, ProcessingStep, StageStatus
from tests.factories import ArtworkFactory
from tests.reliability.conftest import OwnRedis, subprocess_env
from workers.dispatch import pipeline_enqueue
from workers.queues import ALL_QUEUES

pytestmark = pytest.mark.django_db(transaction=True)


class WorkerProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "semart_site",
                "worker",
                "--pool",
                "solo",
                "--queues",
                ",".join(ALL_QUEUES),
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                "INFO",
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def _wait_for(condition, timeout_s: float, what: str, log: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise AssertionError(f"{what} within {timeout_s} s; worker log:\n{tail}")


def test_a_worker_killed_mid_stage_loses_nothing(
    own_redis: OwnRedis, settings, art_dev: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    artwork = ArtworkFactory()
    picture = sorted((art_dev / "images").glob("*.jpg"))[3]
    artwork.image.save("picture.jpg", ContentFile(picture.read_bytes()), save=True)
    env = subprocess_env(settings, redis_url=own_redis.url)
    log = tmp_path / "worker.log"
    running = ProcessingStep.objects.filter(artwork=artwork, status=StageStatus.RUNNING)
    first = WorkerProcess(env, log)
    try:
        pipeline_enqueue(artwork_ids=[artwork.pk])
        # Past the fetch, while a model stage runs (the first one also loads the models: seconds, not ms).
        _wait_for(lambda: running.exclude(stage="fetch").exists(), 45, "no model stage started", log)
        killed_stage = str(running.values_list("stage", flat=True).first())
        first.kill()
    finally:
        first.stop()
    working_copy = Artwork.objects.get(pk=artwork.pk).working_image.name
    step = ProcessingStep.objects.get(artwork=artwork, stage=killed_stage)
    assert step.status == StageStatus.RUNNING  # nobody is left to say otherwise
    assert Artwork.objects.get(pk=artwork.pk).status == ProcessingStatus.PROCESSING

    second = WorkerProcess(env, log)
    try:
        out = StringIO()
        call_command("reconcile", "--stuck-after", "0", "--skip-model-check", stdout=out)
        assert f"{artwork.pk}\tstuck" in out.getvalue()
        _wait_for(
            lambda: (
                str(Artwork.objects.get(pk=artwork.pk).status)
                in {ProcessingStatus.PROCESSED.value, ProcessingStatus.FAILED.value}
            ),
            45,
            "the artwork did not finish",
            log,
        )
    finally:
        second.stop()
    artwork.refresh_from_db()
    steps = {s.stage: s for s in ProcessingStep.objects.filter(artwork=artwork)}
    assert artwork.status == ProcessingStatus.PROCESSED, {
        k: (s.status, s.last_error) for k, s in steps.items()
    }
    assert {s.status for s in steps.values()} == {StageStatus.DONE}
    assert steps[killed_stage].attempts == 2  # the killed run, then the re-queued one
    # Re-queued whole: the stages done before the kill ran again as no-ops, their output untouched.
    assert steps["fetch"].attempts == 2 and artwork.working_image.name == working_copy
    assert artwork.embeddings.exists()
