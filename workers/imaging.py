"""Opening untrusted image bytes safely and turning them into the pictures the pipeline works on.

Every check happens before pixels are decoded where possible: the header's size is compared with the pixel
limit (decompression bombs), then a full decode proves the bytes are an image (truncated files and HTML saved
as .jpg fail here with a message a cataloger can act on).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from workers.pipeline.errors import PermanentStageError

THUMBNAIL_LONG_SIDE = 400
JPEG_QUALITY = 88


class ImageRejected(PermanentStageError):
    """The bytes are not an image we can use; the message says why."""


@dataclass
class NormalisedImage:
    original_size: tuple[int, int]  # width, height of the file as stored (after EXIF rotation)
    working: Image.Image  # RGB, long side at most the working size
    thumbnail: Image.Image  # RGB, long side THUMBNAIL_LONG_SIDE


def sniff_non_image(data: bytes) -> str:
    """Why these bytes are plainly not a picture (a page, a drawing, JSON), or "" when they may be one."""
    head = data[:512].lstrip(b" \t\r\n\xef\xbb\xbf").lower()  # whitespace and a UTF-8 BOM
    xml_svg = head.startswith((b"<?xml", b"<!doctype svg")) and b"<svg" in data[:4096].lower()
    if head.startswith(b"<svg") or xml_svg:
        # Pillow cannot read SVG, and an SVG can carry scripts: never stored or served as a picture.
        return "the file is an SVG drawing (vector XML), not a raster image: export it as PNG or JPEG"
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        return "the file is an HTML or XML page, not an image (often a login or error page saved as .jpg)"
    if head.startswith((b"{", b"[")):
        return "the file is a JSON document, not an image"
    return ""


def image_open_validated(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode untrusted bytes fully, refusing empty, non-image, truncated and oversized pictures."""
    if not data:
        raise ImageRejected("the image file is empty (0 bytes)")
    posing = sniff_non_image(data)
    if posing:
        raise ImageRejected(posing)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; our own limit below is the one
            # that counts.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageRejected(
                    f"the image is {width} x {height} pixels ({width * height:,}), over the limit of "
                    f"{max_pixels:,}: refused as a possible decompression bomb"
                )
            if width < 1 or height < 1:
                raise ImageRejected("the image has no pixels")
            image.load()
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageRejected(f"refused as a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageRejected("the file is not an image format we can read (or it is corrupt)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow reports truncated and corrupt data as OSError ("image file is truncated", "broken data
        # stream").
        raise ImageRejected(f"the image file is damaged or truncated: {exc}") from exc
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB whatever the source: CMYK, 16/32-bit greyscale, palette, alpha (flattened onto white)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # Scale the actual range into 8 bits; a plain convert("L") would clip 16-bit data to white.
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
        return Image.fromarray(scaled.astype(np.uint8)).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("LA", "La", "PA"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "RGBa"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def _fit(image: Image.Image, long_side: int) -> Image.Image:
    if max(image.size) <= long_side:
        return image.copy()
    copy = image.copy()
    copy.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
    return copy


def image_normalise(data: bytes, *, max_pixels: int, working_long_side: int) -> NormalisedImage:
    """Validate, then: first frame of an animation, EXIF orientation applied, RGB, working copy, thumbnail."""
    image = image_open_validated(data, max_pixels=max_pixels)
    if getattr(image, "is_animated", False):
        image.seek(0)
    image = ImageOps.exif_transpose(image) or image
    rgb = _to_rgb(image)
    working = _fit(rgb, working_long_side)
    return NormalisedImage(
        original_size=rgb.size, working=working, thumbnail=_fit(working, THUMBNAIL_LONG_SIDE)
    )


def image_to_jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()
