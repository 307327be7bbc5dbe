"""The test worker helper itself (tests/celery_worker.py): a worker that misses its start is stopped,
reported with its stack, tried once more, and then fails the test instead of hanging the suite."""

from __future__ import annotations

import threading
import time

import pytest
from celery import Celery

from tests.celery_worker import worker_thread


def _test_workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "celery-test-worker" and t.is_alive()]


def _app(broker_url: str) -> Celery:
    app = Celery("semart-worker-helper-test")
    app.conf.broker_url = broker_url
    app.conf.result_backend = broker_url
    return app


def test_a_worker_that_misses_its_start_fails_with_its_stack(settings, redis_client, capsys) -> None:  # type: ignore[no-untyped-def]
    from semart_site.celery import app as default_app

    app = _app(settings.REDIS_URL)
    try:
        with (
            pytest.raises(RuntimeError, match="did not start in 2 tries of 1e-06 s"),
            worker_thread(app, queues=["io"], start_timeout_s=1e-6),
        ):
            pass
    finally:
        default_app.set_current()
        default_app.set_default()
        app.close()
    assert capsys.readouterr().err.count("celery test worker not started after 1e-06 s") == 2
    deadline = time.monotonic() + 10
    while _test_workers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _test_workers() == []


def test_a_started_worker_runs_tasks_and_stops(settings, redis_client) -> None:  # type: ignore[no-untyped-def]
    from semart_site.celery import app as default_app

    app = _app(settings.REDIS_URL)

    @app.task(name="semart.tests.add")
    def add(a: int, b: int) -> int:
        return a + b

    try:
        with worker_thread(app, queues=["io"]):
            assert add.apply_async((2, 3), queue="io").get(timeout=20) == 5
    finally:
        default_app.set_current()
        default_app.set_default()
        app.close()
    assert _test_workers() == []
