"""Bad pictures, on every way in: the importers' and the API's check (``image_bytes_validated``) and the
fetch stage's decoder (``image_normalise``). Each gets a clear refusal, and nothing already stored is lost.

Already covered elsewhere (not repeated here): zero-byte, truncated, corrupt, HTML-as-JPEG and a PNG pixel
bomb in tests/workers/test_imaging.py; CMYK/L/P/RGBA/LA JPEG-PNG, 16-bit greyscale PNG, alpha onto white,
an animated GIF in the same file; corrupt/empty/fake files in a folder import in
tests/collections_app/test_importers.py; bad files failing the pipeline on a real worker in
tests/workers/test_tasks.py.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from collections_app.importers import run_import
from collections_app.importers.folder import plan_folder_import
from collections_app.importers.images import ImageRejected as ImportRejected
from collections_app.importers.images import image_bytes_validated
from collections_app.models import Artwork, ProcessingStatus
from collections_app.services import ArtworkData, artwork_upsert
from tests.workers.image_server import ImageServer, image_server_fixture  # noqa: F401 - the fixture
from workers.imaging import ImageRejected, image_normalise
from workers.pipeline.errors import PermanentStageError
from workers.pipeline.fetch import stage_fetch

LIMIT = 50_000_000


@pytest.fixture(scope="module")
def picture(art_dev: Path) -> Image.Image:
    """A real art-dev painting, made small so the fuzzing below decodes quickly."""
    with Image.open(sorted((art_dev / "images").glob("*.jpg"))[0]) as image:
        small = image.convert("RGB")
    small.thumbnail((160, 160))
    return small


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def normalise(data: bytes) -> Image.Image:
    return image_normalise(data, max_pixels=LIMIT, working_long_side=128).working


# --- Damaged files: fuzzed -----------------------------------------------------------------------------

FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "GIF")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fmt=st.sampled_from(FORMATS),
    cut=st.floats(min_value=0.0, max_value=1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=6),
)
def test_a_damaged_file_is_decoded_or_refused_never_a_crash(
    picture: Image.Image, fmt: str, cut: float, flips: list[tuple[float, int]]
) -> None:
    data = bytearray(encode(picture, fmt))
    for where, value in flips:
        data[int(where * (len(data) - 1))] = value
    damaged = bytes(data[: int(cut * len(data))]) if cut < 1.0 else bytes(data)
    try:
        working = normalise(damaged)
    except ImageRejected as exc:
        assert str(exc)  # a sentence for the cataloger, not an empty error
    else:
        assert working.mode == "RGB" and min(working.size) >= 1
    try:
        assert image_bytes_validated(damaged) == damaged
    except ImportRejected as exc:
        assert str(exc)


# --- Pixel bombs in every format we read ---------------------------------------------------------------


def _jpeg_claiming(picture: Image.Image, width: int, height: int) -> bytes:
    """A real small JPEG whose frame header (SOF0) claims a huge size."""
    data = bytearray(encode(picture, "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _gif_claiming(width: int, height: int) -> bytes:
    return (
        b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00"
        b"," + struct.pack("<HHHH", 0, 0, width, height) + b"\x00\x02\x02\x44\x01\x00;"
    )


def _tiff_claiming(picture: Image.Image, width: int, height: int) -> bytes:
    image = Image.new("L", (8, 8))
    data = bytearray(encode(image, "TIFF"))
    # Patch the ImageWidth (256) and ImageLength (257) entries of the first IFD, both LONG or SHORT.
    ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[ifd : ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        tag, kind = struct.unpack("<HH", data[entry : entry + 4])
        if tag in (256, 257):
            value = width if tag == 256 else height
            data[entry + 2 : entry + 4] = struct.pack("<H", 4)  # LONG
            data[entry + 8 : entry + 12] = struct.pack("<I", value)
    return bytes(data)


def _png_claiming(width: int, height: int) -> bytes:
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("fmt", ["JPEG", "GIF", "TIFF", "PNG"])
def test_a_pixel_bomb_is_refused_from_its_header(picture: Image.Image, fmt: str, settings) -> None:  # type: ignore[no-untyped-def]
    settings.SEMART_FETCH = {**settings.SEMART_FETCH, "max_pixels": LIMIT}
    bomb = {
        "JPEG": lambda: _jpeg_claiming(picture, 60_000, 60_000),
        "GIF": lambda: _gif_claiming(65_000, 65_000),
        "TIFF": lambda: _tiff_claiming(picture, 100_000, 100_000),
        "PNG": lambda: _png_claiming(30_000, 30_000),
    }[fmt]()
    with pytest.raises(ImageRejected, match="decompression bomb"):
        normalise(bomb)
    with pytest.raises(ImportRejected, match="too many pixels|unsupported image format"):
        image_bytes_validated(bomb)


# --- Formats posing as pictures -------------------------------------------------------------------------

SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="800" height="600"><script>alert(1)</script></svg>'


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (SVG, "SVG drawing"),
        (b'<?xml version="1.0"?>\n<!DOCTYPE svg>\n' + SVG, "SVG drawing"),
        (b"\xef\xbb\xbf  \n" + SVG.upper(), "SVG drawing"),
        (b"<html><body><img src=x onerror=alert(1)></body></html>", "HTML"),
        (b'{"error": "not found"}', "JSON"),
    ],
    ids=["svg", "svg-with-prolog", "svg-bom-uppercase", "html", "json"],
)
def test_svg_html_and_json_posing_as_images_are_named(data: bytes, message: str) -> None:
    with pytest.raises(ImageRejected, match=message):
        normalise(data)
    with pytest.raises(ImportRejected, match=message):
        image_bytes_validated(data)


# --- Unusual but valid pictures: accepted, turned into RGB ---------------------------------------------


def _variants(picture: Image.Image) -> dict[str, bytes]:
    ramp = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (32, 1))
    frames = [Image.new("RGB", (32, 32), c) for c in ((200, 0, 0), (0, 200, 0), (0, 0, 200))]
    transparent = picture.convert("RGBA")
    transparent.putalpha(0)
    palette = picture.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    return {
        "cmyk-tiff": encode(picture.convert("CMYK"), "TIFF"),
        "16bit-tiff": encode(Image.fromarray(ramp), "TIFF"),
        "32bit-int-tiff": encode(Image.fromarray(ramp.astype(np.int32)), "TIFF"),
        "float-tiff": encode(Image.fromarray(ramp.astype(np.float32)), "TIFF"),
        "bilevel-png": encode(picture.convert("1"), "PNG"),
        "transparent-webp": encode(transparent, "WEBP", lossless=True),
        "palette-alpha-png": encode(palette, "PNG", transparency=0),
        "animated-png": encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100),
        "animated-webp": encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True),
        "multipage-tiff": encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
    }


@pytest.mark.parametrize(
    "name",
    [
        "cmyk-tiff",
        "16bit-tiff",
        "32bit-int-tiff",
        "float-tiff",
        "bilevel-png",
        "transparent-webp",
        "palette-alpha-png",
        "animated-png",
        "animated-webp",
        "multipage-tiff",
    ],
)
def test_unusual_modes_and_animations_become_rgb(picture: Image.Image, name: str) -> None:
    data = _variants(picture)[name]
    assert image_bytes_validated(data) == data  # the importers and the API take it
    working = normalise(data)
    assert working.mode == "RGB"
    if name.startswith(("animated", "multipage")):
        pixel = working.getpixel((16, 16))
        assert isinstance(pixel, tuple)
        red, green, blue = pixel
        assert red > 150 and green < 60 and blue < 60  # the first frame
    if name == "transparent-webp":
        assert working.getpixel((5, 5)) == (255, 255, 255)  # fully transparent: flattened onto white
    if name == "16bit-tiff":
        pixels = np.asarray(working)
        assert pixels[:, 0].max() < 10 and pixels[:, -1].min() > 245  # the 16-bit range, scaled


# --- Wrong extensions -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_bytes_decide_not_the_extension(picture: Image.Image, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "png-named.jpg").write_bytes(encode(picture, "PNG"))
    (folder / "jpeg-named.png").write_bytes(encode(picture, "JPEG"))
    (folder / "svg-named.png").write_bytes(SVG)
    (folder / "gif-named.webp").write_bytes(encode(picture, "GIF"))
    report = run_import(plan_folder_import(folder).items, progress=False)
    errors = {e.where: e.reason for e in report.errors}
    assert report.created == 2
    assert "SVG drawing" in errors["svg-named.png"]
    assert "unsupported image format GIF" in errors["gif-named.webp"]
    for source_id in ("png-named", "jpeg-named"):
        artwork = Artwork.objects.get(source_id=source_id)
        with artwork.image.open("rb") as handle:
            assert normalise(handle.read()).mode == "RGB"


# --- Nothing stored is lost -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_reimporting_a_broken_image_keeps_the_good_one(picture: Image.Image, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    good = encode(picture, "JPEG")
    (folder / "P1.jpg").write_bytes(good)
    catalogue = tmp_path / "cat.csv"
    catalogue.write_text("id,title\nP1,The good record\n")
    run_import(plan_folder_import(folder, catalog=catalogue).items, progress=False)
    artwork = Artwork.objects.get(source_id="P1")
    Artwork.objects.filter(pk=artwork.pk).update(status=ProcessingStatus.PROCESSED)
    before = (artwork.image.name, artwork.image_sha256, artwork.title)

    for broken in (good[: len(good) // 2], b"", SVG, _jpeg_claiming(picture, 60_000, 60_000)):
        (folder / "P1.jpg").write_bytes(broken)
        catalogue.write_text("id,title\nP1,Overwritten?\n")
        report = run_import(plan_folder_import(folder, catalog=catalogue).items, progress=False)
        assert report.failed == 1 and report.imported == 0
        artwork.refresh_from_db()
        assert (artwork.image.name, artwork.image_sha256, artwork.title) == before
        assert artwork.status == ProcessingStatus.PROCESSED
        with artwork.image.open("rb") as handle:
            assert handle.read() == good


@pytest.mark.django_db
def test_a_service_write_with_a_broken_image_changes_nothing(picture: Image.Image) -> None:
    """The API and any other caller of ``artwork_upsert``: the whole record is refused, the old one kept."""
    from django.core.exceptions import ValidationError

    good = encode(picture, "JPEG")
    data = ArtworkData(source="api", source_id="K1", title="Kept")
    artwork = artwork_upsert(data=data, image_bytes=good, image_name="k1.jpg", queue_processing=False).artwork
    with pytest.raises(ValidationError) as caught:
        artwork_upsert(
            data=ArtworkData(source="api", source_id="K1", title="Changed"),
            image_bytes=good[:-400],
            image_name="k1.jpg",
            queue_processing=False,
        )
    assert "image" in caught.value.message_dict
    artwork.refresh_from_db()
    assert artwork.title == "Kept"
    with artwork.image.open("rb") as handle:
        assert handle.read() == good


@pytest.mark.django_db
def test_the_api_refuses_a_truncated_jpeg_that_passes_djangos_own_check(picture: Image.Image) -> None:
    from rest_framework.test import APIClient

    from search_app.api.services import api_key_create

    key = api_key_create(name="writer", scopes=["write"])[1]
    good = encode(picture, "JPEG")
    data = ArtworkData(source="partner", source_id="T1", title="Kept")
    artwork = artwork_upsert(data=data, image_bytes=good, image_name="t1.jpg", queue_processing=False).artwork
    upload = io.BytesIO(good[: len(good) * 2 // 3])  # Pillow's verify() does not read JPEG scan data
    upload.name = "t1.jpg"
    response = APIClient().patch(
        f"/api/v1/artworks/{artwork.pk}/",
        {"title": "Changed", "image": upload},
        format="multipart",
        HTTP_AUTHORIZATION=f"Api-Key {key}",
    )
    assert response.status_code == 400, response.content
    assert "corrupt image" in str(response.json()["error"]["details"]["image"])
    artwork.refresh_from_db()
    assert artwork.title == "Kept"
    with artwork.image.open("rb") as handle:
        assert handle.read() == good


@pytest.mark.django_db
def test_a_new_image_url_that_serves_junk_keeps_the_old_working_copy(
    picture: Image.Image, image_server: ImageServer, settings
) -> None:  # type: ignore[no-untyped-def]
    settings.SEMART_FETCH = {
        **settings.SEMART_FETCH,
        "allowed_hosts": ["127.0.0.1"],
        "working_long_side": 128,
    }
    data = ArtworkData(
        source="web", source_id="W1", image_url=image_server.route("/a.jpg", body=encode(picture, "JPEG"))
    )
    artwork = artwork_upsert(data=data, queue_processing=False).artwork
    stage_fetch(artwork_id=artwork.pk)
    artwork.refresh_from_db()
    kept = (artwork.working_image.name, artwork.thumbnail.name, artwork.width, artwork.height)

    for path, body, content_type in [
        ("/svg.jpg", SVG, "image/svg+xml"),
        ("/login.jpg", b"<html>Sign in</html>", "image/jpeg"),
        ("/half.jpg", encode(picture, "JPEG")[:500], "image/jpeg"),
    ]:
        url = image_server.route(path, body=body, content_type=content_type)
        artwork_upsert(data=ArtworkData(source="web", source_id="W1", image_url=url), queue_processing=False)
        with pytest.raises(PermanentStageError):
            stage_fetch(artwork_id=artwork.pk)
        artwork.refresh_from_db()
        assert (artwork.working_image.name, artwork.thumbnail.name, artwork.width, artwork.height) == kept
        assert artwork.working_image.storage.exists(str(artwork.working_image.name))
        assert artwork.thumbnail.storage.exists(str(artwork.thumbnail.name))


@pytest.mark.django_db
def test_the_admin_refuses_a_broken_upload_and_keeps_the_good_image(picture: Image.Image) -> None:
    from django.contrib.auth.models import Group, User
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client
    from django.urls import reverse

    user = User.objects.create_user(username="cataloger", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name="Cataloger"))
    client = Client()
    client.force_login(user)
    good = encode(picture, "JPEG")
    data = ArtworkData(source="local", source_id="AD1", title="Kept")
    artwork = artwork_upsert(
        data=data, image_bytes=good, image_name="ad1.jpg", queue_processing=False
    ).artwork
    url = reverse("admin:collections_app_artwork_change", args=[artwork.pk])
    form = {
        "title": "Changed?",
        "source": "local",
        "source_id": "AD1",
        "iconclass": "",
        "details-TOTAL_FORMS": "0",
        "details-INITIAL_FORMS": "0",
        "steps-TOTAL_FORMS": "0",
        "steps-INITIAL_FORMS": "0",
    }
    for name, broken in [("half.jpg", good[: len(good) * 2 // 3]), ("drawing.png", SVG)]:
        upload = SimpleUploadedFile(name, broken, content_type="image/jpeg")
        response = client.post(url, {**form, "image": upload})
        assert response.status_code == 200  # the form again, with the error; not a redirect
        assert "errorlist" in response.content.decode()
        artwork.refresh_from_db()
        assert artwork.title == "Kept"
        with artwork.image.open("rb") as handle:
            assert handle.read() == good
