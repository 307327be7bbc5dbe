"""Importers against real art-dev images (read in place, copied only into tmp_path) and the real database."""

from __future__ import annotations

import json
import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from collections_app.importers import run_import
from collections_app.importers.catalogue import CatalogueError
from collections_app.importers.folder import plan_folder_import
from collections_app.importers.iiif import load_manifest, plan_iiif_import
from collections_app.importers.nga import plan_nga_import
from collections_app.importers.remote import FetchRefused, fetch_document
from collections_app.models import Artwork, ProcessingStatus

pytestmark = pytest.mark.django_db

IDS = ("A0003", "A0004", "A0005")


@pytest.fixture
def folder(art_dev: Path, tmp_path: Path) -> Path:
    """Three real artworks in a folder of their own (a copy in tmp_path; the dataset stays read-only)."""
    target = tmp_path / "images"
    target.mkdir()
    for image_id in IDS:
        shutil.copy(art_dev / "images" / f"{image_id}.jpg", target / f"{image_id}.jpg")
    return target


def write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def do_import(folder: Path, **kwargs):  # type: ignore[no-untyped-def]
    plan = plan_folder_import(folder, **kwargs)
    return plan, run_import(plan.items, progress=False)


def errors_of(report) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {e.where: e.reason for e in report.errors}


def test_folder_only_uses_file_stems_as_ids(folder: Path) -> None:
    _, report = do_import(folder)
    assert (report.created, report.failed) == (3, 0)
    artworks = {a.source_id: a for a in Artwork.objects.all()}
    assert set(artworks) == set(IDS)
    a = artworks["A0003"]
    assert a.source == "local" and a.status == ProcessingStatus.PENDING
    assert a.image and len(a.image_sha256) == 64
    assert a.image.read() == (folder / "A0003.jpg").read_bytes()


def test_png_tiff_and_webp_in_subfolders_are_found(folder: Path) -> None:
    from PIL import Image

    nested = folder / "scans" / "2024"
    nested.mkdir(parents=True)
    with Image.open(folder / "A0003.jpg") as img:
        for suffix in ("png", "tif", "webp"):
            img.save(nested / f"copy-{suffix}.{suffix.upper()}")
    (folder / ".hidden.jpg").write_bytes((folder / "A0004.jpg").read_bytes())
    (folder / "readme.txt").write_text("not an image, not a candidate")
    _, report = do_import(folder)
    assert (report.created, report.failed) == (6, 0)
    assert {"copy-png", "copy-tif", "copy-webp"} <= set(Artwork.objects.values_list("source_id", flat=True))


def test_folder_with_catalogue_keyed_by_id(folder: Path, tmp_path: Path) -> None:
    catalogue = write_csv(
        tmp_path / "cat.csv",
        "id,source_id,title,artist,date,medium,iconclass,licence,notes\n"
        "A0003,Q17335796,Saint Jerome,Master A; Master B,c. 1520-1530,oil on panel,11H(JEROME),CC0,kept\n"
        "A0004,Q20173065,John the Baptist,,1600,,,,\n",
    )
    _, report = do_import(folder, catalog=catalogue, source="demo")
    assert (report.created, report.failed) == (2, 0)
    jerome = Artwork.objects.get(source="demo", source_id="A0003")
    assert jerome.title == "Saint Jerome"
    assert sorted(jerome.artist_names.split(", ")) == ["Master A", "Master B"]
    assert (jerome.display_date, jerome.date_begin, jerome.date_end) == ("c. 1520-1530", 1520, 1530)
    assert jerome.iconclass == ["11H(JEROME)"] and jerome.licence == "CC0" and jerome.medium == "oil on panel"
    # The catalogue's own "source_id" column is another system's id: kept, but not ours.
    assert jerome.extra == {"source_id": "Q17335796", "notes": "kept"}
    assert not Artwork.objects.filter(source_id__startswith="Q").exists()
    # A0005's image is not in the catalogue: listed, not imported under a guessed id.
    assert not Artwork.objects.filter(source_id="A0005").exists()


def test_include_uncatalogued_imports_the_rest_by_file_name(folder: Path, tmp_path: Path) -> None:
    catalogue = write_csv(tmp_path / "cat.csv", "id,title\nA0003,Saint Jerome\n")
    plan, report = do_import(folder, catalog=catalogue, include_uncatalogued=True)
    assert report.created == 3
    assert any("2 image(s)" in note for note in plan.notes)


def test_catalogue_keyed_by_file_name(folder: Path, tmp_path: Path) -> None:
    (folder / "sub").mkdir()
    shutil.move(folder / "A0005.jpg", folder / "sub" / "A0005.jpg")
    catalogue = write_csv(tmp_path / "cat.csv", "filename,title\nA0004.jpg,Baptist\nsub/A0005.jpg,Five\n")
    _, report = do_import(folder, catalog=catalogue)
    assert (report.created, report.failed) == (2, 0)
    assert Artwork.objects.get(source_id="A0005").title == "Five"


def test_art_dev_metadata_keys_on_id_and_keeps_wikidata_in_extra(art_dev: Path) -> None:
    plan = plan_folder_import(art_dev, catalog=art_dev / "metadata.csv")
    good = [item for item in plan.items if item.data is not None]
    assert len(good) == 391 and not [i for i in plan.items if i.error]
    first = good[0].data
    assert first.source_id == "A0003" and first.extra["source_id"] == "Q17335796"
    assert good[0].image_path == (art_dev / "images" / "A0003.jpg").resolve()


def test_reimport_updates_and_never_duplicates(folder: Path, tmp_path: Path) -> None:
    catalogue = write_csv(tmp_path / "cat.csv", "id,title\nA0003,One\nA0004,Two\n")
    do_import(folder, catalog=catalogue)
    _, again = do_import(folder, catalog=catalogue)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2)
    write_csv(catalogue, "id,title\nA0003,One (corrected)\nA0004,Two\n")
    _, third = do_import(folder, catalog=catalogue)
    assert (third.created, third.updated, third.unchanged) == (0, 1, 1)
    assert Artwork.objects.count() == 2
    assert Artwork.objects.get(source_id="A0003").title == "One (corrected)"


def test_changed_image_resets_status(folder: Path, art_dev: Path) -> None:
    do_import(folder)
    Artwork.objects.update(status=ProcessingStatus.PROCESSED)
    before = Artwork.objects.get(source_id="A0003").image_sha256
    shutil.copy(art_dev / "images" / "A0010.jpg", folder / "A0003.jpg")
    _, report = do_import(folder)
    assert (report.updated, report.unchanged) == (1, 2)
    changed = Artwork.objects.get(source_id="A0003")
    assert changed.status == ProcessingStatus.PENDING and changed.image_sha256 != before
    assert Artwork.objects.get(source_id="A0004").status == ProcessingStatus.PROCESSED


def test_malformed_rows_are_reported_by_line_and_the_rest_imported(folder: Path, tmp_path: Path) -> None:
    catalogue = write_csv(
        tmp_path / "cat.csv",
        "id,title,begin_year,end_year\n"
        'A0003,"A title\nover two lines",1500,1510\n'  # lines 2-3: a quoted newline is one record
        "A0004,too,many,columns,here\n"  # line 4
        "A0005,Bad year,fifteen hundred,\n",  # line 5
    )
    _, report = do_import(folder, catalog=catalogue)
    assert report.created == 1
    errors = errors_of(report)
    assert "expected 4 columns, found 5" in errors["cat.csv line 4"]
    assert "not a year" in errors["cat.csv line 5"]
    assert Artwork.objects.get().title == "A title\nover two lines"


def test_missing_files_and_duplicate_ids(folder: Path, tmp_path: Path) -> None:
    catalogue = write_csv(
        tmp_path / "cat.csv",
        "id,image_file,title\nA0003,A0003.jpg,first\nX1,nowhere.jpg,lost\n"
        "A0003,A0004.jpg,again\nX2,,no file\n",
    )
    _, report = do_import(folder, catalog=catalogue)
    errors = errors_of(report)
    assert report.created == 1 and report.failed == 3
    assert "image file not found: 'nowhere.jpg'" in errors["cat.csv line 3"]
    assert "duplicate id 'A0003' (first on cat.csv line 2)" in errors["cat.csv line 4"]
    assert "no image named X2" in errors["cat.csv line 5"]
    assert Artwork.objects.get().title == "first"


def test_a_row_without_file_but_with_iiif_url_is_imported(folder: Path, tmp_path: Path) -> None:
    catalogue = write_csv(
        tmp_path / "cat.csv", "id,title,iiif_url\nR1,Remote,https://iiif.example.org/iiif/abc\n"
    )
    _, report = do_import(folder, catalog=catalogue)
    assert report.created == 1
    assert Artwork.objects.get().iiif_url == "https://iiif.example.org/iiif/abc"


def test_missing_key_column_is_a_clear_error(folder: Path, tmp_path: Path) -> None:
    catalogue = write_csv(tmp_path / "cat.csv", "title,artist\nA,B\n")
    with pytest.raises(CatalogueError, match="needs a key column"):
        plan_folder_import(folder, catalog=catalogue)
    with pytest.raises(CatalogueError, match="no column 'inv'"):
        plan_folder_import(folder, catalog=write_csv(tmp_path / "c2.csv", "id,title\n"), id_column="inv")


def test_cp1252_catalogue_is_read_with_a_warning(folder: Path, tmp_path: Path) -> None:
    catalogue = write_csv(
        tmp_path / "cat.csv", "id;title\nA0003;Vierge à l'Enfant – détail\n", encoding="cp1252"
    )
    plan, report = do_import(folder, catalog=catalogue)
    assert any("cp1252" in note for note in plan.notes)
    assert Artwork.objects.get().title == "Vierge à l'Enfant – détail"


def test_a_row_with_bytes_that_are_not_utf8_fails_alone(folder: Path, tmp_path: Path) -> None:
    catalogue = tmp_path / "cat.csv"
    catalogue.write_bytes(
        "id,title\nA0003,Madonna – Ünterberg\n".encode() + b"A0004,Caf\xe9 \xff\n" + b"A0005,Fine\n"
    )
    _, report = do_import(folder, catalog=catalogue)
    assert report.created == 2
    assert "bad encoding" in errors_of(report)["cat.csv line 3"]
    assert Artwork.objects.get(source_id="A0003").title == "Madonna – Ünterberg"


def test_corrupt_empty_and_fake_images_are_row_errors(folder: Path) -> None:
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is a text file posing as a JPEG")
    good = (folder / "A0003.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    _, report = do_import(folder)
    errors = errors_of(report)
    assert report.created == 3 and report.failed == 3
    assert "empty file" in errors["empty.jpg"]
    assert "not an image" in errors["notes.jpg"]
    assert "corrupt image" in errors["truncated.jpg"]
    assert set(Artwork.objects.values_list("source_id", flat=True)) == set(IDS)


def test_pixel_limit_rejects_oversized_images(folder: Path, settings) -> None:  # type: ignore[no-untyped-def]
    settings.SEMART_FETCH = {**settings.SEMART_FETCH, "max_pixels": 1000}
    _, report = do_import(folder)
    assert report.created == 0 and all("too many pixels" in e.reason for e in report.errors)


def test_unknown_iconclass_notations_are_dropped_with_a_warning(folder: Path, tmp_path: Path) -> None:
    catalogue = write_csv(tmp_path / "cat.csv", "id,iconclass\nA0003,11H(JEROME); 99ZZZ-not-real;73A5\n")
    _, report = do_import(folder, catalog=catalogue)
    assert report.created == 1
    assert Artwork.objects.get().iconclass == ["11H(JEROME)", "73A5"]
    assert any("99ZZZ-not-real" in w.reason and w.where == "cat.csv line 2" for w in report.warnings)


# --- NGA open data --------------------------------------------------------------------------------------

NGA_OBJECTS = (
    "objectid,accessionnum,title,displaydate,beginyear,endyear,medium,dimensions,classification,attribution,"
    "creditline,provenancetext\n"
    "1138,1937.1.24,The Annunciation,c. 1434/1436,1434,1436,oil on canvas transferred from panel,"
    '"overall: 90.2 x 34.1 cm",Painting,Jan van Eyck,Andrew W. Mellon Collection,Hermitage\n'
    "12217,1942.9.1,Saint Jerome,1520,1520,1520,oil on panel,,Painting,Lorenzo Lotto,Samuel H. Kress,\n"
    "5000,1943.3.1,A drawing,1600,1600,1600,pen,,Drawing,Anon,Gift,\n"
    "777,1950.1.1,No image,1700,1700,1700,oil,,Painting,Anon,Gift,\n"
)
NGA_IMAGES = (
    "uuid,iiifurl,iiifthumburl,viewtype,sequence,width,height,maxpixels,created,modified,depictstmsobjectid\n"
    'u-1,https://api.nga.gov/iiif/u-1,"https://api.nga.gov/iiif/u-1/full/!200,200/0/default.jpg",primary,0,'
    "1800,4700,,,,1138\n"
    "u-2,https://api.nga.gov/iiif/u-2,,alternate,1,100,100,,,,1138\n"
    "u-3,https://api.nga.gov/iiif/u-3,,primary,0,2000,2500,,,,12217\n"
    "u-4,https://api.nga.gov/iiif/u-4,,primary,0,900,900,,,,5000\n"
)


@pytest.fixture
def nga_files(tmp_path: Path) -> tuple[Path, Path]:
    return write_csv(tmp_path / "objects.csv", NGA_OBJECTS), write_csv(
        tmp_path / "published_images.csv", NGA_IMAGES
    )


def test_nga_objects_with_primary_images_are_imported(nga_files: tuple[Path, Path]) -> None:
    objects, images = nga_files
    plan = plan_nga_import(objects=objects, images=images, classification="painting")
    report = run_import(plan.items, progress=False)
    assert report.created == 2
    assert any("1 object(s) have no primary published image" in n for n in plan.notes)
    annunciation = Artwork.objects.get(source="nga", source_id="1138")
    assert annunciation.iiif_url == "https://api.nga.gov/iiif/u-1"
    assert (annunciation.accession_number, annunciation.date_begin, annunciation.date_end) == (
        "1937.1.24",
        1434,
        1436,
    )
    assert annunciation.artist_names == "Jan van Eyck"
    assert annunciation.credit_line == "Andrew W. Mellon Collection"
    assert annunciation.extra["provenancetext"] == "Hermitage"
    assert not Artwork.objects.filter(source_id="5000").exists()  # a drawing, filtered out
    again = run_import(plan_nga_import(objects=objects, images=images).items, progress=False)
    assert (again.created, again.unchanged) == (1, 2) and Artwork.objects.count() == 3


def test_nga_limit(nga_files: tuple[Path, Path]) -> None:
    objects, images = nga_files
    assert len(plan_nga_import(objects=objects, images=images, limit=1).items) == 1


# --- IIIF manifests -------------------------------------------------------------------------------------

MANIFEST_V2 = {
    "@context": "http://iiif.io/api/presentation/2/context.json",
    "@id": "https://example.org/iiif/book1/manifest",
    "@type": "sc:Manifest",
    "label": "Book of Hours",
    "description": "Illuminated <b>prayer</b> book",
    "attribution": "Example Library",
    "license": "https://creativecommons.org/publicdomain/zero/1.0/",
    "metadata": [
        {"label": "Artist", "value": "Master of the Hours"},
        {"label": "Date", "value": "ca. 1480-1490"},
        {"label": "Shelfmark", "value": "MS 12"},
    ],
    "sequences": [
        {
            "canvases": [
                {
                    "@id": f"https://example.org/iiif/book1/canvas/p{n}",
                    "label": f"f. {n}r",
                    "width": 1000,
                    "height": 1500,
                    "images": [
                        {
                            "resource": {
                                "@id": f"https://example.org/iiif/p{n}/full/full/0/default.jpg",
                                "service": {
                                    "@id": f"https://example.org/iiif/p{n}",
                                    "profile": "http://iiif.io/api/image/2/level1.json",
                                },
                            }
                        }
                    ],
                }
                for n in (1, 2)
            ]
        }
    ],
}
MANIFEST_V3 = {
    "@context": "http://iiif.io/api/presentation/3/context.json",
    "id": "https://example.org/iiif/3/painting/manifest",
    "type": "Manifest",
    "label": {"en": ["The Annunciation"], "nl": ["De Annunciatie"]},
    "summary": {"en": ["An angel greets Mary."]},
    "rights": "http://creativecommons.org/publicdomain/zero/1.0/",
    "requiredStatement": {"label": {"en": ["Attribution"]}, "value": {"en": ["Example Museum"]}},
    "homepage": [{"id": "https://example.org/collection/42", "type": "Text"}],
    "metadata": [
        {"label": {"en": ["Creator"]}, "value": {"none": ["Fra Angelico"]}},
        {"label": {"en": ["Medium"]}, "value": {"en": ["tempera on panel"]}},
        {"label": {"en": ["Iconclass"]}, "value": {"none": ["73A5; not-a-notation"]}},
    ],
    "items": [
        {
            "id": "https://example.org/iiif/3/painting/canvas/1",
            "type": "Canvas",
            "width": 3000,
            "height": 2000,
            "items": [
                {
                    "id": "https://example.org/iiif/3/painting/page/1",
                    "type": "AnnotationPage",
                    "items": [
                        {
                            "id": "https://example.org/iiif/3/painting/anno/1",
                            "type": "Annotation",
                            "motivation": "painting",
                            "body": {
                                "id": "https://example.org/iiif/img42/full/max/0/default.jpg",
                                "type": "Image",
                                "service": [
                                    {"id": "https://example.org/iiif/img42", "type": "ImageService3"}
                                ],
                            },
                            "target": "https://example.org/iiif/3/painting/canvas/1",
                        }
                    ],
                }
            ],
        }
    ],
}


def _import_manifest(path: Path, manifest: dict, **kwargs):  # type: ignore[no-untyped-def]
    path.write_text(json.dumps(manifest))
    loaded, name = load_manifest(str(path))
    return run_import(plan_iiif_import(loaded, name=name, **kwargs).items, progress=False)


def test_iiif_v2_one_artwork_per_canvas(tmp_path: Path) -> None:
    report = _import_manifest(tmp_path / "m2.json", MANIFEST_V2)
    assert report.created == 2
    page = Artwork.objects.get(source="iiif", source_id="https://example.org/iiif/book1/canvas/p2")
    assert page.title == "Book of Hours (f. 2r)"
    assert page.iiif_url == "https://example.org/iiif/p2"
    assert page.artist_names == "Master of the Hours"
    assert (page.date_begin, page.date_end) == (1480, 1490)
    assert page.description == "Illuminated prayer book" and page.credit_line == "Example Library"
    assert page.extra["Shelfmark"] == "MS 12"


def test_iiif_v2_single_artwork_per_manifest(tmp_path: Path) -> None:
    report = _import_manifest(tmp_path / "m2.json", MANIFEST_V2, single=True)
    assert report.created == 1
    book = Artwork.objects.get()
    assert book.source_id == "https://example.org/iiif/book1/manifest" and book.iiif_url.endswith("/p1")


def test_iiif_v3_manifest(tmp_path: Path) -> None:
    report = _import_manifest(tmp_path / "m3.json", MANIFEST_V3)
    assert report.created == 1
    painting = Artwork.objects.get()
    assert painting.title == "The Annunciation" and painting.artist_names == "Fra Angelico"
    assert painting.iiif_url == "https://example.org/iiif/img42"
    assert painting.licence == "http://creativecommons.org/publicdomain/zero/1.0/"
    assert painting.source_url == "https://example.org/collection/42"
    assert painting.medium == "tempera on panel" and painting.iconclass == ["73A5"]
    assert any("not-a-notation" in w.reason for w in report.warnings)
    again = _import_manifest(tmp_path / "m3.json", MANIFEST_V3)
    assert again.unchanged == 1 and Artwork.objects.count() == 1


def test_not_a_manifest_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"hello": "world"}')
    manifest, name = load_manifest(str(tmp_path / "x.json"))
    with pytest.raises(CatalogueError, match="not a IIIF Presentation manifest"):
        plan_iiif_import(manifest, name=name)
    (tmp_path / "y.json").write_text("{not json")
    with pytest.raises(CatalogueError, match="not JSON"):
        load_manifest(str(tmp_path / "y.json"))


@pytest.fixture
def manifest_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "manifest.json").write_text(json.dumps(MANIFEST_V3))
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_manifest_url_on_a_loopback_address_is_refused(manifest_server: str) -> None:
    with pytest.raises(FetchRefused, match="private, loopback or link-local"):
        load_manifest(f"{manifest_server}/manifest.json")
    with pytest.raises(FetchRefused, match=r"not an http\(s\) URL"):
        fetch_document("file:///etc/passwd")


def test_manifest_url_from_an_allowed_host(manifest_server: str, settings) -> None:  # type: ignore[no-untyped-def]
    settings.SEMART_FETCH = {**settings.SEMART_FETCH, "allowed_hosts": ["127.0.0.1"]}
    manifest, name = load_manifest(f"{manifest_server}/manifest.json")
    assert plan_iiif_import(manifest, name=name).items[0].data.iiif_url == "https://example.org/iiif/img42"
    with pytest.raises(FetchRefused, match="too large|larger than the limit"):
        fetch_document(f"{manifest_server}/manifest.json", max_bytes=100)
    with pytest.raises(FetchRefused, match="HTTP 404"):
        fetch_document(f"{manifest_server}/missing.json")
