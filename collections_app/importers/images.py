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


def read_valid_image(path: Path) -> bytes:
    """The file's bytes, once Pillow has parsed and decoded it within the size and pixel limits.

    JPEGs are decoded at reduced scale (``draft``), which still reads every byte of the stream, so a
    truncated file fails here for a fraction of a full decode.
    """
    import io

    from PIL import Image, UnidentifiedImageError

    limits = settings.SEMART_FETCH
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise ImageRejected(f"file not found: {path}") from exc
    if size == 0:
        raise ImageRejected("empty file (0 bytes)")
    if size > limits["max_bytes"]:
        raise ImageRejected(f"file too large ({size} bytes, limit {limits['max_bytes']})")
    data = path.read_bytes()
    try:
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
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow reports corrupt streams with all three
        raise ImageRejected(f"corrupt image: {exc}") from exc
    return data
