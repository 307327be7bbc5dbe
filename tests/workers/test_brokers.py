"""The pipeline through each broker a deployment may choose: RabbitMQ (amqp) and Redis, with results in Redis
either way. A real Celery worker (a thread of this process, tests/celery_worker.py) consumes every queue of
the broker under test, and a whole pipeline chain goes through it; model sessions are test doubles, since
this is about the transport. Skipped, with the reason, only when the broker does not answer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from django.core.files.base import ContentFile
from kombu import Connection

from collections_app.models import Artwork, ProcessingStatus, ProcessingStep, StageStatus
from tests.celery_worker import worker_thread
from tests.factories import ArtworkFactory
from tests.workers.fakes import fake_models_fixture  # noqa: F401 - the fixture
from workers.dispatch import pipeline_enqueue
from workers.queues import ALL_QUEUES

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent.parent
AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def _broker_answers(url: str) -> str | None:
    """None when a connection to ``url`` opens; else why not."""
    try:
        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as error:  # any failure to connect means "no broker here", which is the skip reason
        return f"{type(error).__name__}: {error}"
    return None


@pytest.fixture(params=["amqp", "redis"])
def broker_app(request: pytest.FixtureRequest, settings, redis_client) -> Iterator[Celery]:  # type: ignore[no-untyped-def]
    """A Celery app like semart_site.celery's, on the broker under test, with a worker consuming it. It is
    made the current app, so the pipeline's tasks (shared tasks) are sent through it."""
    from semart_site.celery import app as default_app

    url = AMQP_URL if request.param == "amqp" else settings.REDIS_URL
    why = _broker_answers(url)
    if why:
        pytest.skip(f"{request.param} broker at {url} does not answer ({why})")
    app = Celery("semart-broker-test")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.broker_url = url
    app.conf.result_backend = settings.REDIS_URL  # results and mailboxes stay in Redis whatever the broker
    app.conf.task_always_eager = False
    app.conf.imports = default_app.conf.imports
    app.autodiscover_tasks()
    app.set_current()
    try:
        with worker_thread(app, queues=ALL_QUEUES) as worker:
            assert worker.consumer.connection.transport.driver_type == request.param
            yield app
    finally:
        default_app.set_current()
        app.close()


def _finished(pk: int, timeout_s: float = 120.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = Artwork.objects.values_list("status", flat=True).get(pk=pk)
        if status in (ProcessingStatus.PROCESSED, ProcessingStatus.FAILED):
            return status
        time.sleep(0.2)
    raise AssertionError(f"artwork {pk} not finished after {timeout_s} s")


def test_the_celery_app_takes_an_amqp_broker_and_keeps_results_in_redis(tmp_path: Path) -> None:
    """semart_site.celery configured from the environment as a worker host would be (a fresh process)."""
    code = (
        "import django; django.setup(); from semart_site.celery import app; "
        "print(app.conf.broker_url); print(app.conf.result_backend); "
        "print(app.connection_for_write().transport.driver_type)"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "semart_site.settings.local",
        "SEMART_DATA_DIR": str(tmp_path),
        "DATABASE_URL": "postgres://semart@127.0.0.1:5432/semart",  # parsed only: nothing connects
        "CELERY_BROKER_URL": AMQP_URL,
        "REDIS_URL": "redis://127.0.0.1:6379/3",
    }
    env.pop("CELERY_RESULT_BACKEND", None)
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert out == [AMQP_URL, "redis://127.0.0.1:6379/3", "amqp"]


def test_a_pipeline_chain_goes_through_the_broker(broker_app: Celery, fake_models, art_dev: Path) -> None:  # type: ignore[no-untyped-def]
    picture = sorted((art_dev / "images").glob("*.jpg"))[0]
    artwork = ArtworkFactory()
    artwork.image.save("picture.jpg", ContentFile(picture.read_bytes()), save=True)

    pipeline_enqueue(artwork_ids=[artwork.pk])

    assert _finished(artwork.pk) == ProcessingStatus.PROCESSED
    steps = ProcessingStep.objects.filter(artwork=artwork)
    assert steps.count() == 6
    assert set(steps.values_list("status", flat=True)) == {StageStatus.DONE}
    assert artwork.embeddings.filter(kind="image").count() == 1
    assert artwork.details.filter(level="entity").exists()
