"""Shared fixtures. Tests talk to real PostgreSQL + pgvector and real Redis; nothing here fakes them."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def art_dev() -> Path:
    """The labelled development set (read in place; never copied into the project)."""
    path = SHARED_DATASETS / "art-dev"
    if not (path / "images").is_dir():
        pytest.fail(f"{path} is missing: the tests read real artworks from ../shared/datasets")
    return path


@pytest.fixture(scope="session")
def art_pool() -> Path:
    path = SHARED_DATASETS / "art-pool"
    if not (path / "images").is_dir():
        pytest.fail(f"{path} is missing: the tests read real artworks from ../shared/datasets")
    return path


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Uploaded and derived images go to a per-test folder."""
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def _nothing_remembered_in_process(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """What a process keeps in memory for a few seconds (verified API keys, the catalogue's notations) is
    not carried from one test's rolled-back rows into the next test."""
    from search_app import iconclass_expansion
    from search_app.api.services import forget_api_keys

    forget_api_keys()
    monkeypatch.setattr(iconclass_expansion, "_local", (-1e18, []))


@pytest.fixture
def redis_client(settings):  # type: ignore[no-untyped-def]
    """The real Redis of the test settings, emptied before and after the test."""
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def celery_worker(settings, redis_client):  # type: ignore[no-untyped-def]
    """A real Celery worker (in a thread of this process) consuming every queue of the test Redis.

    Tests using it need ``@pytest.mark.django_db(transaction=True)`` so the worker's own database
    connection sees their rows.
    """
    from semart_site.celery import app
    from tests.celery_worker import worker_thread
    from workers.queues import ALL_QUEUES

    app.conf.task_always_eager = False
    with worker_thread(app, queues=ALL_QUEUES) as worker:
        yield worker
