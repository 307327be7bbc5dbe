"""A model that will not load: a corrupt weights file where the offline embedder looks for a trained head, and
a production backend (SAM) pointed at a checkpoint folder that does not exist. The stage fails at once (a
missing or broken file does not heal by retrying), with a sentence catalogers read in the jobs view; the
artwork is failed, later stages say why they did not run, reconcile re-queues it once the files are fixed,
and the search still answers from words."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.test import Client

from collections_app.models import Artwork, ProcessingStatus, ProcessingStep, Stage, StageStatus
from tests.factories import ArtworkFactory
from workers.inference import registry
from workers.pipeline.fetch import stage_fetch
from workers.tasks import stage_embed_task, stage_entities_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def fetched(art_dev: Path) -> Artwork:
    artwork = ArtworkFactory(title="The Annunciation with a lily")
    picture = sorted((art_dev / "images").glob("*.jpg"))[1]
    artwork.image.save("picture.jpg", ContentFile(picture.read_bytes()), save=True)
    stage_fetch(artwork_id=artwork.pk)
    return artwork


@pytest.fixture
def fresh_models():  # type: ignore[no-untyped-def]
    registry.get_model.cache_clear()
    yield
    registry.get_model.cache_clear()


def _assert_failed_readably(artwork: Artwork, stage: str, *words: str) -> ProcessingStep:
    step = ProcessingStep.objects.get(artwork=artwork, stage=stage)
    assert step.status == StageStatus.FAILED and step.attempts == 1  # not retried
    assert f"the {stage} model could not be loaded" in step.last_error
    for word in words:
        assert word in step.last_error
    artwork.refresh_from_db()
    assert artwork.status == ProcessingStatus.FAILED
    return step


def test_a_corrupt_weights_file_fails_the_stage_and_search_still_answers(  # type: ignore[no-untyped-def]
    fetched, fresh_models, settings, tmp_path, redis_client, admin_client
) -> None:
    settings.SEMART_MODEL_DIR = tmp_path
    (tmp_path / "offline-head.npz").write_bytes(b"not a numpy archive, a half-copied file")
    from workers.dispatch import pipeline_enqueue

    pipeline_enqueue(artwork_ids=[fetched.pk])  # every stage queued (the messages wait in the test Redis)
    result = stage_embed_task.apply(kwargs={"artwork_id": fetched.pk})
    assert result.state == "IGNORED"  # the chain ends; the worker goes on
    _assert_failed_readably(fetched, Stage.EMBED, "offline-head.npz", "is not a projection head file")
    later = ProcessingStep.objects.get(artwork=fetched, stage=Stage.CAPTIONS)
    assert later.status == StageStatus.PENDING and later.last_error == "not run: the embed stage failed"

    jobs = admin_client.get("/admin/jobs/")
    assert jobs.status_code == 200 and "is not a projection head file" in jobs.text
    assert (
        "is not a projection head file"
        in admin_client.get(f"/admin/collections_app/artwork/{fetched.pk}/change/").text
    )

    settings.SEARCH = {**settings.SEARCH, "rerank_timeout_s": 0.3}  # no worker runs here
    body = Client().get("/search.json", {"q": "annunciation"}).json()
    assert [hit["title"] for hit in body["hits"]] == ["The Annunciation with a lily"]
    assert "no image-text model installed" in body["degraded"]

    (tmp_path / "offline-head.npz").unlink()  # the deployment is fixed: the shipped head is used again
    registry.get_model.cache_clear()
    out = StringIO()
    call_command("reconcile", "--dry-run", stdout=out)
    assert f"{fetched.pk}\tfailed" in out.getvalue()


@pytest.mark.ml
def test_a_production_detector_without_its_checkpoint_fails_readably(  # type: ignore[no-untyped-def]
    fetched, fresh_models, settings, monkeypatch, tmp_path
) -> None:
    pytest.importorskip("transformers")
    missing = tmp_path / "sam-vit-base-never-copied"
    monkeypatch.setenv("SEMART_SAM_CHECKPOINT", str(missing))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings.SEMART_MODELS = {**settings.SEMART_MODELS, "detector": "sam"}
    result = stage_entities_task.apply(kwargs={"artwork_id": fetched.pk})
    assert result.state == "IGNORED"
    _assert_failed_readably(fetched, Stage.ENTITIES, str(missing))
