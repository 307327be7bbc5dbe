"""Image files on disk: which files count as images, and a cheap check that one is really a readable image."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp"})
# What Pillow calls the formats we accept ("MPO" is a JPEG with extra frames, as some cameras write).
ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "TIFF", "WEBP"})


class ImageRejected(ValueError):
    """The file is not an image we can store: the row fails, nothing is written."""


def find_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, hidden files skipped), in a stable order."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def read_image_file(path: Path) -> bytes:
    """The file's bytes, refusing a missing, empty or oversized file before reading it."""
    limits = settings.SEMART_FETCH
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise ImageRejected(f"file not found: {path}") from exc
    if size > limits["max_bytes"]:
        raise ImageRejected(f"file too large ({size} bytes, limit {limits['max_bytes']})")
    if size == 0:
        raise ImageRejected("empty file (0 bytes)")
    return path.read_bytes()


def image_bytes_validated(data: bytes) -> bytes:
    """The bytes, once Pillow has parsed and decoded them within the size and pixel limits.

    JPEGs are decoded at reduced scale (``draft``), which still reads every byte of the stream, so a
    truncated file fails here for a fraction of a full decode. Every way in (importers, the API, the
    admin) checks here before an artwork's stored image is replaced, so a broken file never displaces a
    good one.
    """
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError

    from workers.imaging import sniff_non_image

    limits = settings.SEMART_FETCH
    if not data:
        raise ImageRejected("empty file (0 bytes)")
    if len(data) > limits["max_bytes"]:
        raise ImageRejected(f"file too large ({len(data)} bytes, limit {limits['max_bytes']})")
    posing = sniff_non_image(data)
    if posing:
        raise ImageRejected(f"not an image: {posing}")
    try:
        with warnings.catch_warnings():
            # Our pixel limit below is the one that counts; Pillow's own bomb warning is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.format not in ACCEPTED_FORMATS:
                    raise ImageRejected(f"unsupported image format {img.format}")
                width, height = img.size
                if width * height > limits["max_pixels"]:
                    raise ImageRejected(f"too many pixels ({width}x{height}, limit {limits['max_pixels']})")
                img.verify()
            with Image.open(io.BytesIO(data)) as img:
                img.draft("RGB", (256, 256))
                img.load()
    except ImageRejected:
        raise
    except UnidentifiedImageError as exc:
        raise ImageRejected("not an image (Pillow cannot identify it)") from exc
    except Image.DecompressionBombError as exc:
        raise ImageRejected(f"too many pixels: {exc}") from exc
    # Pillow reports corrupt streams with all of these.
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected(f"corrupt image: {exc}") from exc
    return data
