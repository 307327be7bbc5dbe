"""Validation and normalisation of untrusted image bytes: a real art-dev picture and damaged variants."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workers.imaging import THUMBNAIL_LONG_SIDE, ImageRejected, image_normalise, image_open_validated

LIMIT = 50_000_000


@pytest.fixture(scope="module")
def picture(art_dev: Path) -> Image.Image:
    path = sorted((art_dev / "images").glob("*.jpg"))[0]
    with Image.open(path) as image:
        return image.convert("RGB")


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size in a few bytes: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_a_real_jpeg_is_normalised(picture: Image.Image) -> None:
    result = image_normalise(encode(picture, "JPEG"), max_pixels=LIMIT, working_long_side=256)
    assert result.original_size == picture.size
    assert result.working.mode == "RGB" and max(result.working.size) == 256
    assert max(result.thumbnail.size) <= THUMBNAIL_LONG_SIDE
    # aspect ratio kept within a pixel of rounding
    w, h = picture.size
    assert abs(result.working.size[0] / result.working.size[1] - w / h) < 0.02


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda jpeg: b"", "empty"),
        (lambda jpeg: jpeg[: len(jpeg) // 2], "damaged or truncated"),
        (lambda jpeg: jpeg[:20] + bytes(range(256)) * 40, "damaged|not an image"),
        (lambda jpeg: b"<!DOCTYPE html><html><body>Please log in</body></html>", "HTML"),
        (lambda jpeg: b"\x00" * 5000, "not an image"),
    ],
    ids=["zero-byte", "truncated", "corrupt", "html-as-jpeg", "garbage"],
)
def test_bad_files_are_rejected_with_a_clear_message(picture: Image.Image, make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ImageRejected, match=message):
        image_open_validated(make(encode(picture, "JPEG")), max_pixels=LIMIT)


def test_a_pixel_bomb_is_refused_before_decoding() -> None:
    with pytest.raises(ImageRejected, match="decompression bomb"):
        image_open_validated(png_header_only(40_000, 40_000), max_pixels=LIMIT)


def test_exif_orientation_is_applied(picture: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = encode(picture, "JPEG", exif=exif.tobytes())
    result = image_normalise(data, max_pixels=LIMIT, working_long_side=4096)
    assert result.original_size == (picture.size[1], picture.size[0])


@pytest.mark.parametrize("mode", ["CMYK", "L", "P", "RGBA", "LA"])
def test_colour_modes_become_rgb(picture: Image.Image, mode: str) -> None:
    fmt = "JPEG" if mode in ("CMYK", "L") else "PNG"
    result = image_normalise(encode(picture.convert(mode), fmt), max_pixels=LIMIT, working_long_side=128)
    assert result.working.mode == "RGB"


def test_alpha_is_flattened_onto_white() -> None:
    transparent = Image.new("RGBA", (40, 30), (10, 20, 30, 0))
    result = image_normalise(encode(transparent, "PNG"), max_pixels=LIMIT, working_long_side=64)
    assert result.working.getpixel((5, 5)) == (255, 255, 255)


def test_sixteen_bit_greyscale_keeps_its_contrast() -> None:
    ramp = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (32, 1))
    data = encode(Image.fromarray(ramp), "PNG")
    result = image_normalise(data, max_pixels=LIMIT, working_long_side=64)
    pixels = np.asarray(result.working)
    assert pixels[:, 0].max() < 10 and pixels[:, -1].min() > 245  # a plain convert would clip it all to white


def test_an_animation_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((200, 0, 0), (0, 200, 0), (0, 0, 200))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    result = image_normalise(data, max_pixels=LIMIT, working_long_side=64)
    red, green, blue = result.working.getpixel((16, 16))
    assert red > 150 and green < 60 and blue < 60
