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
    seen: list[tuple[int, int]] = []
    outcome = wait_for_processing(
        artwork_ids=ids, timeout_s=20, poll_s=0.05, on_progress=lambda d, f: seen.append((d, f))
    )
    assert outcome.processed == 3 and not outcome.timed_out and outcome.unfinished == 0
    assert seen[0] == (0, 0) and seen[-1] == (3, 0)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_wait_with_a_real_worker(folder: Path, celery_worker) -> None:  # type: ignore[no-untyped-def]
    """The real pipeline on a real Celery worker: --wait returns when both artworks are processed."""
    pytest.importorskip(
        "workers.tasks", reason="the vision pipeline (workers/tasks.py) is not in the tree yet"
    )
    (folder / "A0005.jpg").unlink()
    out, err = run("import_images", str(folder), "--wait", "--poll", "0.5", "--timeout", "600")
    assert "Processing: 2 processed, 0 failed, 0 unfinished." in out, err
    assert set(Artwork.objects.values_list("status", flat=True)) == {ProcessingStatus.PROCESSED}
