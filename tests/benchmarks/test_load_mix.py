"""The load test's request mix (benchmarks/locustfile.py) runs against a real uvicorn server for a few
seconds: every request type answers 200, and answers that came back degraded are counted apart, not as errors.

No worker consumes the rerank queue here, with short timeouts: every search degrades, which is what the
counting must show. The long load run itself is benchmarks/load_test.py.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collections_app.models import Artwork
from search_app.api.services import api_key_create
from tests.factories import ArtworkFactory

ROOT = Path(__file__).resolve().parents[2]
LOCUST = Path(sys.executable).parent / "locust"
# Never imported here: importing locust monkey-patches the whole process with gevent.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None or not LOCUST.exists(),
    reason="locust is in the bench extra: pip install -e '.[bench]'",
)


@pytest.fixture
def live_site(transactional_db, redis_client, settings) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """uvicorn serving the site in a thread of this process (so it sees the test database)."""
    import uvicorn
    from django.core.asgi import get_asgi_application

    settings.SEARCH = {**settings.SEARCH, "rerank_timeout_s": 0.2, "encode_timeout_s": 0.2}
    settings.SEMART_API = {**settings.SEMART_API, "key_rate": "10000/minute"}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(
            get_asgi_application(), host="127.0.0.1", port=port, lifespan="off", log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    from django.db import connection

    with connection.cursor() as cursor:  # the server's threads hold connections: end them for the flush
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def test_every_request_of_the_mix_answers_and_degraded_answers_are_counted_apart(
    live_site: str, art_dev: Path, tmp_path: Path
) -> None:
    artworks: list[Artwork] = ArtworkFactory.create_batch(30, title="Saint Jerome with a lion")
    ids = [artwork.pk for artwork in artworks]
    _, raw_key = api_key_create(name="load smoke", scopes=["read"])
    quality = tmp_path / "quality.json"
    subprocess.run(
        [str(LOCUST), "-f", str(ROOT / "benchmarks" / "locustfile.py"), "--headless", "-u", "4", "-r", "4"]
        + ["-t", "8s", "--host", live_site, "--csv", str(tmp_path / "smoke"), "--only-summary"]
        + ["--loglevel", "WARNING", "--stop-timeout", "5"],
        cwd=ROOT,
        env={
            **os.environ,
            "LOAD_API_KEY": raw_key,
            "LOAD_ARTWORK_IDS": ",".join(map(str, ids)),
            "LOAD_QUERIES": str(art_dev / "queries.jsonl"),
            "LOAD_WAIT": "0.05,0.1",
            "LOAD_QUALITY_OUT": str(quality),
        },
        check=True,
        timeout=60,
        capture_output=True,
    )
    with (tmp_path / "smoke_stats.csv").open(newline="") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    with (tmp_path / "smoke_failures.csv").open(newline="") as handle:
        failures = list(csv.DictReader(handle))
    assert failures == []
    names = set(rows) - {"Aggregated"}
    assert names == {
        *("page: search", "json: scroll", "page: artwork"),
        *("api: list", "api: retrieve", "api: search"),
    }
    assert all(int(rows[n]["Request Count"]) > 0 for n in names)
    answers = json.loads(quality.read_text())
    # Nothing answers on the rerank queue: every checked search is degraded, none is an HTTP error.
    assert sum(answers["checked"].values()) > 0
    assert answers["degraded"] == answers["checked"]
    assert set(answers["checked"]) == {"page: search", "json: scroll", "api: search"}
