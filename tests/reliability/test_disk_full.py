"""The disk holding media is full. Media live on a 64 KiB tmpfs mounted for the test (root only; elsewhere
FakeFullDiskStorage raises the same ENOSPC): an import fails its row with the reason and stores nothing, the
fetch stage is retried with backoff and gives up with a sentence a cataloger can act on, and what was stored
before (files and rows) is untouched: no truncated file, no half-written temporary, no orphan."""

from __future__ import annotations

import errno
import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from collections_app.importers.base import run_import
from collections_app.importers.folder import plan_folder_import
from collections_app.models import Artwork, ProcessingStatus, ProcessingStep, Stage, StageStatus
from workers.tasks import stage_fetch_task

pytestmark = pytest.mark.django_db


def _fill(folder: Path) -> None:
    """Write until the disk refuses: from here on it is full."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with (folder / "filler.bin").open("wb") as handle:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
    except OSError as error:
        assert error.errno == errno.ENOSPC


@pytest.fixture
def small_disk(settings, tmp_path: Path) -> Iterator[str]:
    """MEDIA_ROOT on a 64 KiB tmpfs; yields "tmpfs", or "double" where mounting is not allowed."""
    mount = tmp_path / "tiny-disk"
    mount.mkdir()
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True, check=False
        ).returncode
        == 0
    )
    settings.MEDIA_ROOT = mount
    if not mounted:
        from tests.reliability.doubles import FakeFullDiskStorage

        FakeFullDiskStorage.free_bytes = 64 * 1024
        settings.STORAGES = {
            **settings.STORAGES,
            "default": {"BACKEND": "tests.reliability.doubles.FakeFullDiskStorage"},
        }
    try:
        yield "tmpfs" if mounted else "double"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mount)], check=False)


def _make_full(kind: str, media: Path) -> None:
    if kind == "tmpfs":
        _fill(media / "filler")
    else:
        from tests.reliability.doubles import FakeFullDiskStorage

        FakeFullDiskStorage.free_bytes = 0


def _files(media: Path) -> dict[str, str]:
    return {
        str(p.relative_to(media)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in media.rglob("*")
        if p.is_file() and p.parent.name != "filler"
    }


def _import(folder: Path) -> object:
    plan = plan_folder_import(
        folder, catalog=None, source="local", id_column=None, include_uncatalogued=False
    )
    return run_import(plan.items, progress=False)


def test_a_full_disk_fails_imports_and_fetches_clearly_and_keeps_what_was_stored(  # type: ignore[no-untyped-def]
    small_disk, settings, art_dev: Path, tmp_path: Path
) -> None:
    pictures = sorted((art_dev / "images").glob("*.jpg"), key=lambda p: p.stat().st_size)
    media = Path(settings.MEDIA_ROOT)
    first = tmp_path / "first"
    first.mkdir()
    (first / "small.jpg").write_bytes(pictures[0].read_bytes())  # ~12 KB: fits
    assert _import(first).created == 1  # type: ignore[attr-defined]
    kept = Artwork.objects.get()
    _make_full(small_disk, media)
    before = _files(media)
    assert list(before) == [kept.image.name]

    second = tmp_path / "second"
    second.mkdir()
    (second / "large.jpg").write_bytes(pictures[-1].read_bytes())
    report = _import(second)
    assert report.created == 0 and report.failed == 1  # type: ignore[attr-defined]
    assert "No space left on device" in report.errors[0].reason  # type: ignore[attr-defined]
    assert Artwork.objects.count() == 1
    assert _files(media) == before  # no truncated file, no leftover temporary

    settings.SEMART_PIPELINE = {"max_retries": 1, "retry_base_s": 0.01, "retry_max_s": 0.01}
    ProcessingStep.objects.create(artwork=kept, stage=Stage.FETCH, status=StageStatus.QUEUED)
    result = stage_fetch_task.apply(kwargs={"artwork_id": kept.pk})  # eager: retries run at once
    assert result.state == "IGNORED"
    step = ProcessingStep.objects.get(artwork=kept, stage=Stage.FETCH)
    assert step.status == StageStatus.FAILED and step.attempts == 2
    assert (
        "gave up after 2 attempts" in step.last_error and "the disk holding media is full" in step.last_error
    )
    kept.refresh_from_db()
    assert kept.status == ProcessingStatus.FAILED and not kept.working_image and not kept.thumbnail
    assert _files(media) == before  # the original is intact, and no working copy was left half-made
