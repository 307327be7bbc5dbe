"""How artworks' pictures reach visitors: their URLs, and a narrow view that serves them from storage.

Outside DEBUG nothing else serves MEDIA_ROOT. This view serves only the folders artworks' images live in,
only as JPEG, PNG or WebP, with ``nosniff`` so a file that is not what its name says is never run as
something else by a browser.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest
from django.views.decorators.http import require_safe

from collections_app.models import Artwork

# upload_to of Artwork.image, .thumbnail and .working_image
SERVED_FOLDERS = ("artworks", "thumbnails", "working")
CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
# What the first bytes of each type look like: a file named .jpg that is not a JPEG is not served.
_MAGIC = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/webp": (b"RIFF",),
}
IIIF_THUMBNAIL_SIZE = "!400,400"
IIIF_LARGE_SIZE = "!1600,1600"


def _iiif(iiif_url: str, size: str) -> str:
    return f"{iiif_url.rstrip('/')}/full/{size}/0/default.jpg"


def _displayable(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in CONTENT_TYPES


def artwork_thumbnail_url(artwork: Artwork) -> str:
    """The smallest picture a browser can show for the artwork, or "" when it has none yet."""
    return thumbnail_url_of(
        thumbnail=artwork.thumbnail.name or "",
        working_image=artwork.working_image.name or "",
        iiif_url=artwork.iiif_url,
        image=artwork.image.name or "",
        image_url=artwork.image_url,
    )


def thumbnail_url_of(*, thumbnail: str, working_image: str, iiif_url: str, image: str, image_url: str) -> str:
    """``artwork_thumbnail_url`` from the stored values (file names, URLs), for lists read without
    building Artwork objects (a search page's 24 took ~0.5 ms to build)."""

    def url(field: str, name: str) -> str:
        return str(Artwork._meta.get_field(field).storage.url(name))  # type: ignore[union-attr]

    if thumbnail:
        return url("thumbnail", thumbnail)
    if working_image:
        return url("working_image", working_image)
    if iiif_url:
        return _iiif(iiif_url, IIIF_THUMBNAIL_SIZE)
    if image and _displayable(image):
        return url("image", image)
    return image_url


def artwork_large_url(artwork: Artwork) -> str:
    """The picture for the artwork page: the working copy (normalised, web-sized), else the original."""
    if artwork.working_image:
        return str(artwork.working_image.url)
    if artwork.image and _displayable(artwork.image.name or ""):
        return str(artwork.image.url)
    if artwork.iiif_url:
        return _iiif(artwork.iiif_url, IIIF_LARGE_SIZE)
    if artwork.image_url:
        return artwork.image_url
    return str(artwork.thumbnail.url) if artwork.thumbnail else ""


@require_safe
def serve_artwork_image(request: HttpRequest, path: str) -> FileResponse:
    name = PurePosixPath(path)
    content_type = CONTENT_TYPES.get(name.suffix.lower())
    if content_type is None or not name.parts or name.parts[0] not in SERVED_FOLDERS or ".." in name.parts:
        raise Http404("No such image.")
    try:
        handle = default_storage.open(str(name), "rb")
    except (FileNotFoundError, IsADirectoryError, SuspiciousFileOperation):
        raise Http404("No such image.") from None
    head = handle.read(12)
    if not head.startswith(_MAGIC[content_type]) or (content_type == "image/webp" and head[8:12] != b"WEBP"):
        handle.close()
        raise Http404("No such image.")
    handle.seek(0)
    response = FileResponse(handle, content_type=content_type)
    response["X-Content-Type-Options"] = "nosniff"
    # An hour: thumbnails may be regenerated under the same name when an artwork is reprocessed.
    response["Cache-Control"] = "public, max-age=3600"
    response["Content-Security-Policy"] = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'"
    return response
