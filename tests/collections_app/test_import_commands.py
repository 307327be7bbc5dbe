"""The import commands as a cataloger runs them: summary, row errors, exit status, and --wait."""

from __future__ import annotations

import json
import shutil
import threading
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from collections_app.importers.waiting import wait_for_processing
from collections_app.models import Artwork, ProcessingStatus, ProcessingStep, Stage, StageStatus

IDS = ("A0003", "A0004", "A0005")


@pytest.fixture
def folder(art_dev: Path, tmp_path: Path) -> Path:
    target = tmp_path / "images"
    target.mkdir()
    for image_id in IDS:
        shutil.copy(art_dev / "images" / f"{image_id}.jpg", target / f"{image_id}.jpg")
    return target


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, "--no-progress", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_import_images_prints_a_summary_and_row_errors(folder: Path) -> None:
    (folder / "empty.jpg").write_bytes(b"")
    out, err = run("import_images", str(folder), "--no-process")
    assert "created 3, updated 0, unchanged 0, failed 1" in out
    assert "failed: empty.jpg: empty file" in err
    out, _ = run("import_images", str(folder), "--no-process")
    assert "created 0, updated 0, unchanged 3, failed 1" in out
    assert Artwork.objects.count() == 3


@pytest.mark.django_db
def test_import_images_fails_when_nothing_could_be_imported(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(CommandError, match=r"Nothing could be imported \(1 failed\)"):
        run("import_images", str(tmp_path), "--no-process")
    (tmp_path / "broken.png").unlink()
    with pytest.raises(CommandError, match="No images found"):
        run("import_images", str(tmp_path), "--no-process")
    with pytest.raises(CommandError, match="is not a folder"):
        run("import_images", str(tmp_path / "nope"), "--no-process")
    assert not Artwork.objects.exists()


@pytest.mark.django_db
def test_import_images_missing_key_column_is_fatal(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "cat.csv").write_text("title,artist\nA,B\n")
    with pytest.raises(CommandError, match="needs a key column"):
        run("import_images", str(folder), "--catalog", str(tmp_path / "cat.csv"), "--no-process")


@pytest.mark.django_db
def test_wait_cannot_be_combined_with_no_process(folder: Path) -> None:
    with pytest.raises(CommandError, match="cannot be combined"):
        run("import_images", str(folder), "--no-process", "--wait")


@pytest.mark.django_db
def test_import_nga_and_iiif_commands(tmp_path: Path) -> None:
    (tmp_path / "objects.csv").write_text(
        "objectid,accessionnum,title,classification,attribution\n1,1937.1.1,Madonna,Painting,Duccio\n"
    )
    (tmp_path / "images.csv").write_text(
        "uuid,iiifurl,viewtype,depictstmsobjectid\nu1,https://api.nga.gov/iiif/u1,primary,1\n"
    )
    out, _ = run(
        "import_nga", "--objects", str(tmp_path / "objects.csv"), "--images", str(tmp_path / "images.csv"),
        "--no-process",
    )  # fmt: skip
    assert "created 1" in out
    assert Artwork.objects.get(source="nga").iiif_url == "https://api.nga.gov/iiif/u1"

    manifest = {
        "@context": "http://iiif.io/api/presentation/3/context.json",
        "id": "https://example.org/m/1",
        "type": "Manifest",
        "label": {"en": ["Icon"]},
        "items": [
            {
                "id": "https://example.org/m/1/c1",
                "type": "Canvas",
                "items": [
                    {
                        "type": "AnnotationPage",
                        "items": [
                            {
                                "type": "Annotation",
                                "body": {"id": "https://example.org/i/1.jpg", "type": "Image"},
                            }
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    out, _ = run("import_iiif", str(tmp_path / "m.json"), "--no-process")
    assert "created 1" in out
    # No image service: the image's own URL is kept.
    assert Artwork.objects.get(source="iiif").image_url == "https://example.org/i/1.jpg"
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(CommandError, match="not a IIIF manifest"):
        run("import_iiif", str(tmp_path / "bad.json"), "--no-process")
    with pytest.raises(CommandError, match="private, loopback or link-local"):
        run("import_iiif", "http://127.0.0.1:9/manifest.json", "--no-process")


# --- waiting for processing ----------------------------------------------------------------------------


class FakePipelineFinishingLater:
    """Stands in for the Celery pipeline in tests about --wait: after a delay it marks each queued artwork
    processed, or failed (with a step error) when its source_id is in ``fail``. Runs in a thread with its own
    database connection, as a worker would."""

    def __init__(self, *, delay_s: float = 0.5, fail: tuple[str, ...] = ()) -> None:
        self.delay_s, self.fail, self.threads, self.queued = delay_s, fail, [], []

    def __call__(
        self, *, artwork_ids: list[int], force: bool = False, stages: list[str] | None = None
    ) -> int:
        self.queued.extend(artwork_ids)
        thread = threading.Thread(target=self._finish, args=(list(artwork_ids),))
        thread.start()
        self.threads.append(thread)
        return len(artwork_ids)

    def _finish(self, ids: list[int]) -> None:
        try:
            time.sleep(self.delay_s)
            for artwork in Artwork.objects.filter(pk__in=ids):
                if artwork.source_id in self.fail:
                    ProcessingStep.objects.update_or_create(
                        artwork=artwork, stage=Stage.EMBED,
                        defaults={"status": StageStatus.FAILED, "last_error": "CUDA out of memory"},
                    )  # fmt: skip
                    artwork.status = ProcessingStatus.FAILED
                else:
                    artwork.status = ProcessingStatus.PROCESSED
                artwork.save(update_fields=["status"])
        finally:
            connection.close()


@pytest.fixture
def fake_pipeline(monkeypatch):  # type: ignore[no-untyped-def]
    def install(**kwargs):  # type: ignore[no-untyped-def]
        fake = FakePipelineFinishingLater(**kwargs)
        monkeypatch.setattr("collections_app.importers.base.artwork_queue_processing", fake)
        return fake

    yield install


@pytest.mark.django_db(transaction=True)
def test_wait_blocks_until_processed(folder: Path, fake_pipeline) -> None:  # type: ignore[no-untyped-def]
    fake = fake_pipeline(delay_s=0.6)
    started = time.monotonic()
    out, _ = run("import_images", str(folder), "--wait", "--poll", "0.1", "--timeout", "30")
    assert time.monotonic() - started >= 0.6
    assert "3 queued for processing" in out and "Processing: 3 processed, 0 failed, 0 unfinished." in out
    assert sorted(fake.queued) == sorted(Artwork.objects.values_list("pk", flat=True))
    assert set(Artwork.objects.values_list("status", flat=True)) == {ProcessingStatus.PROCESSED}
    # Nothing changed and everything is processed: a second run queues nothing and returns at once.
    out, _ = run("import_images", str(folder), "--wait", "--poll", "0.1", "--timeout", "5")
    assert "unchanged 3" in out and "queued" not in out.split("Processing")[0]


@pytest.mark.django_db(transaction=True)
def test_wait_lists_failures_and_exits_non_zero(folder: Path, fake_pipeline) -> None:  # type: ignore[no-untyped-def]
    fake_pipeline(delay_s=0.2, fail=("A0004",))
    err = StringIO()
    args = ("import_images", str(folder), "--wait", "--poll", "0.1", "--no-progress")
    with pytest.raises(CommandError, match=r"1 artwork\(s\) failed processing"):
        call_command(*args, stdout=StringIO(), stderr=err)
    assert "processing failed: A0004" in err.getvalue()
    assert "embed: CUDA out of memory" in err.getvalue()


@pytest.mark.django_db(transaction=True)
def test_wait_times_out(folder: Path, fake_pipeline) -> None:  # type: ignore[no-untyped-def]
    fake = fake_pipeline(delay_s=3.0)
    with pytest.raises(CommandError, match=r"Timed out after 0.3 s with 3 artwork\(s\) unfinished"):
        run("import_images", str(folder), "--wait", "--poll", "0.1", "--timeout", "0.3")
    for thread in fake.threads:
        thread.join()


@pytest.mark.django_db(transaction=True)
def test_wait_for_processing_reports_progress(folder: Path, fake_pipeline) -> None:  # type: ignore[no-untyped-def]
    run("import_images", str(folder), "--no-process")
    ids = list(Artwork.objects.values_list("pk", flat=True))
    fake_pipeline(delay_s=0.3)(artwork_ids=ids)
    # A record with no image is never processed; it must not hold the wait until the timeout.
    imageless = Artwork.objects.create(source="test", source_id="no-image", title="Catalogue card only")
    seen: list[tuple[int, int]] = []
    outcome = wait_for_processing(
        artwork_ids=[*ids, imageless.pk],
        timeout_s=20,
        poll_s=0.05,
        on_progress=lambda d, f: seen.append((d, f)),
    )
    assert outcome.total == 3 and outcome.processed == 3 and not outcome.timed_out and outcome.unfinished == 0
    assert seen[0] == (0, 0) and seen[-1] == (3, 0)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_wait_with_a_real_worker(folder: Path, celery_worker) -> None:  # type: ignore[no-untyped-def]
    """The real pipeline on a real Celery worker: --wait returns when both artworks are processed."""
    pytest.importorskip(
        "workers.tasks", reason="the vision pipeline (workers/tasks.py) is not in the tree yet"
    )
    (folder / "A0005.jpg").unlink()
    out, err = StringIO(), StringIO()
    args = ("import_images", str(folder), "--wait", "--poll", "0.5", "--timeout", "600", "--no-progress")
    try:
        call_command(*args, stdout=out, stderr=err)
    except CommandError as exc:
        pytest.fail(f"{exc}\n{err.getvalue()}")
    assert "Processing: 2 processed, 0 failed, 0 unfinished." in out.getvalue()
    assert set(Artwork.objects.values_list("status", flat=True)) == {ProcessingStatus.PROCESSED}


# --- the demo -------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_demo_without_images_or_network_fails_clearly(tmp_path: Path, settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model

    settings.SEMART_DATA_DIR = tmp_path / "data"
    monkeypatch.setattr("collections_app.management.commands.demo.DEMO_POOL", tmp_path / "no-pool")
    # ".invalid" never resolves (RFC 2606), so this behaves as a machine without internet, here or anywhere.
    monkeypatch.setattr(
        "collections_app.importers.aic.AIC_SEARCH", "https://api.invalid/api/v1/artworks/search"
    )
    with pytest.raises(CommandError, match="could not be reached .* Pass a folder: manage.py demo PATH"):
        call_command("demo", "--no-serve", stdout=StringIO(), stderr=StringIO())
    # The admin was made before the import was attempted, and its password written where the README says.
    credentials = (tmp_path / "data" / "demo-admin.txt").read_text()
    password = credentials.split("password: ")[1].strip()
    assert get_user_model().objects.get(username="admin").check_password(password)
    assert (tmp_path / "data" / "demo-admin.txt").stat().st_mode & 0o077 == 0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _demo_env(tmp_path: Path, settings) -> dict[str, str]:  # type: ignore[no-untyped-def]
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    # A data folder of its own (a fresh embedded PostgreSQL) and the test Redis database as the broker.
    env.update(
        SEMART_DATA_DIR=str(tmp_path / "data"),
        REDIS_URL=settings.REDIS_URL,
        DJANGO_SETTINGS_MODULE="semart_site.settings.local",
    )
    return env


def _pids(text: str) -> list[int]:
    import re

    return [int(p) for p in re.findall(r"started \(pid (\d+)", text)]


def _gone(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); it has exited all the same.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


@pytest.mark.slow
def test_demo_imports_and_processes_a_tiny_folder(
    folder: Path, tmp_path: Path, settings, redis_client
) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    (folder / "A0005.jpg").unlink()
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "manage.py", "demo", str(folder), "--no-serve", "--timeout", "240"],
        cwd=root, env=_demo_env(tmp_path, settings), capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "Import: created 2" in result.stdout and "Demo collection processed." in result.stdout
    assert "Processing: 2 processed, 0 failed, 0 unfinished." in result.stdout
    assert all(_gone(pid) for pid in _pids(result.stdout)), "the worker outlived the demo"


@pytest.mark.slow
def test_demo_serves_the_site_and_stops_its_children_on_ctrl_c(
    folder: Path, tmp_path: Path, settings, redis_client
) -> None:  # type: ignore[no-untyped-def]
    import signal
    import subprocess
    import sys

    import httpx

    port = _free_port()
    root = Path(__file__).resolve().parents[2]
    log = tmp_path / "demo.out"
    with log.open("w") as out:
        demo = subprocess.Popen(
            [sys.executable, "manage.py", "demo", str(folder), "--port", str(port), "--timeout", "600"],
            cwd=root, env=_demo_env(tmp_path, settings), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            status = None
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and demo.poll() is None:
                try:
                    status = httpx.get(f"http://127.0.0.1:{port}/admin/login/", timeout=5).status_code
                    break
                except httpx.TransportError:
                    time.sleep(1)
            assert status == 200, log.read_text()[-3000:]
            demo.send_signal(signal.SIGINT)  # what Ctrl-C sends
            assert demo.wait(timeout=60) == 0, log.read_text()[-3000:]
        finally:
            if demo.poll() is None:
                demo.kill()
    text = log.read_text()
    pids = _pids(text)
    assert len(pids) == 2, text[-3000:]  # the worker and the web server
    assert all(_gone(pid) for pid in pids), "a child outlived the demo"
    # And the embedded PostgreSQL it started: pg_ctl stop removes the postmaster's pid file.
    postmaster = tmp_path / "data" / "postgres" / "postmaster.pid"
    deadline = time.monotonic() + 30
    while postmaster.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not postmaster.exists(), "the embedded PostgreSQL outlived the demo"


def test_demo_starts_an_embedded_redis_when_none_answers(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import redis

    from collections_app.management.commands.demo import Command
    from semart_site.celery import app

    for name in ("REDIS_URL", "CELERY_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("collections_app.management.commands.demo.LOCAL_REDIS", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(app.conf, "broker_url", app.conf.broker_url)
    monkeypatch.setattr(app.conf, "result_backend", app.conf.result_backend)
    handle, env = Command(stdout=StringIO())._broker(tmp_path)
    try:
        assert env["REDIS_URL"].startswith("unix://") and env["SEMART_DATA_DIR"] == str(tmp_path)
        assert redis.Redis.from_url(env["REDIS_URL"]).ping()
        # This process queues tasks too: kombu spells the same socket redis+socket://.
        assert app.conf.broker_url == "redis+socket://" + env["REDIS_URL"].removeprefix("unix://")
    finally:
        handle.shutdown()
