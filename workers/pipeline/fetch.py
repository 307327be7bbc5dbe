"""Stage 1: fetch the image (stored file, IIIF or URL), validate and normalise it, keep a working copy and a
thumbnail, and record the original's size."""

from __future__ import annotations

import contextlib
import errno
import hashlib

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction

from collections_app.models import Artwork, Stage
from workers.fetching import fetch_bytes
from workers.imaging import image_normalise, image_to_jpeg
from workers.pipeline.errors import PermanentStageError, StorageFullError
from workers.pipeline.state import artwork_lock, invalidate_stages, step_version

IMAGING_VERSION = "imaging@1"


def iiif_image_url(base: str) -> str:
    """A IIIF Image API request for the whole picture at most 1024 px on a side. ``!w,h`` is valid in both API
    2 and 3 (3 also accepts it as the "best fit" form), so one URL serves both."""
    base = base.rstrip("/")
    if base.endswith("/info.json"):
        base = base[: -len("/info.json")]
    return f"{base}/full/!1024,1024/0/default.jpg"


def artwork_image_bytes(artwork: Artwork) -> bytes:
    """The original image's bytes: the stored file if there is one, else IIIF, else the direct URL."""
    if artwork.image:
        try:
            with artwork.image.open("rb") as handle:
                data: bytes = handle.read(settings.SEMART_FETCH["max_bytes"] + 1)
        except FileNotFoundError as exc:
            raise PermanentStageError(f"the stored image file {artwork.image.name} is missing") from exc
        if len(data) > settings.SEMART_FETCH["max_bytes"]:
            raise PermanentStageError(
                f"the stored image is over the limit of {settings.SEMART_FETCH['max_bytes']:,} bytes"
            )
        return data
    url = iiif_image_url(artwork.iiif_url) if artwork.iiif_url else artwork.image_url
    if not url:
        raise PermanentStageError("the artwork has no image: no file, IIIF service or image URL")
    fetched = fetch_bytes(
        url,
        timeout_s=settings.SEMART_FETCH["timeout_s"],
        max_bytes=settings.SEMART_FETCH["max_bytes"],
        allowed_hosts=list(settings.SEMART_FETCH["allowed_hosts"]),
    )
    return fetched.data


def _source_key(artwork: Artwork) -> str:
    return artwork.image_sha256 or artwork.iiif_url or artwork.image_url


def stage_fetch(*, artwork_id: int, force: bool = False) -> str:
    """Make the working copy and thumbnail. A no-op when they exist for the current image source."""
    artwork = Artwork.objects.get(pk=artwork_id)
    version = f"{IMAGING_VERSION}:{hashlib.sha1(_source_key(artwork).encode()).hexdigest()[:12]}"
    if (
        not force
        and artwork.working_image
        and artwork.thumbnail
        and step_version(artwork_id, Stage.FETCH) == version
    ):
        return version
    # The download happens outside the row lock: a slow server must not block edits to the record.
    data = artwork_image_bytes(artwork)
    image = image_normalise(
        data,
        max_pixels=settings.SEMART_FETCH["max_pixels"],
        working_long_side=settings.SEMART_FETCH["working_long_side"],
    )
    written: list[str] = []
    storage = artwork.working_image.storage
    try:
        with transaction.atomic():
            artwork = artwork_lock(artwork_id)
            old_files = [str(f.name) for f in (artwork.working_image, artwork.thumbnail) if f]
            stem = f"{artwork.pk}_{hashlib.sha1(data).hexdigest()[:12]}"
            artwork.working_image.save(f"{stem}.jpg", ContentFile(image_to_jpeg(image.working)), save=False)
            written.append(str(artwork.working_image.name))
            artwork.thumbnail.save(f"{stem}.jpg", ContentFile(image_to_jpeg(image.thumbnail)), save=False)
            written.append(str(artwork.thumbnail.name))
            artwork.width, artwork.height = image.original_size
            artwork.save(update_fields=["working_image", "thumbnail", "width", "height", "updated_at"])
            # A new picture: everything computed from the old one is out of date.
            invalidate_stages(
                artwork_id, [Stage.EMBED, Stage.ENTITIES, Stage.GROUPS, Stage.SCENES, Stage.CAPTIONS]
            )
            new_files = {artwork.working_image.name, artwork.thumbnail.name}
            stale = [name for name in old_files if name not in new_files]

            def delete_stale() -> None:
                for name in stale:
                    storage.delete(name)

            # Once committed the new files are the artwork's whatever happens next; the old ones go only then:
            # a rollback must not leave the row pointing at deleted files.
            transaction.on_commit(written.clear)
            transaction.on_commit(delete_stale)
    except Exception as exc:
        # The row still names the old files (rolled back): the new ones would only take up room.
        for name in written:
            with contextlib.suppress(OSError):
                storage.delete(name)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFullError(
                f"the disk holding media is full: the working copy and thumbnail could not be written "
                f"({exc.strerror}); make room, then it is retried"
            ) from exc
        raise
    return version
