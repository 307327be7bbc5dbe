"""Partial HNSW indexes (collections_app/vector_indexes.py) against the real PostgreSQL + pgvector."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction

from collections_app.vector_indexes import ensure_hnsw_index, index_name

MODEL_KEY = "race-test-model@1"


def _index_count(name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_indexes WHERE indexname = %s", [name])
        return int(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_two_workers_creating_the_same_index_wait_for_each_other() -> None:
    """The first still holds its new index uncommitted when the second asks for the same one (what two
    workers storing a new model's first vectors do): the second waits, then finds it, and neither fails."""
    name = index_name("artwork", MODEL_KEY, "image", 8)
    created = threading.Event()
    errors: list[BaseException] = []
    waited: list[float] = []

    def first() -> None:
        try:
            with transaction.atomic():
                ensure_hnsw_index(target="artwork", model_key=MODEL_KEY, kind="image", dim=8)
                created.set()
                time.sleep(0.5)  # the second asks meanwhile
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)
        finally:
            created.set()
            connection.close()

    def second() -> None:
        created.wait(10)
        try:
            with transaction.atomic():
                started = time.monotonic()
                ensure_hnsw_index(target="artwork", model_key=MODEL_KEY, kind="image", dim=8)
                waited.append(time.monotonic() - started)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
        assert waited and waited[0] > 0.2, "the second waited for the first to commit"
        assert _index_count(name) == 1
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP INDEX IF EXISTS {name}")
