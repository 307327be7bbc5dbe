"""Reading catalogue CSVs: encodings, line numbers, and mapping common column names onto ArtworkData."""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

from collections_app.iconography import split_notations
from collections_app.services import ArtworkData


class CatalogueError(ValueError):
    """The catalogue as a whole cannot be read (a fatal error, unlike a bad row)."""


@dataclass
class CsvRow:
    line: int  # the line the record starts on, counting the header as line 1
    values: dict[str, str]
    error: str = ""


@dataclass
class CsvTable:
    path: Path
    columns: list[str]
    rows: list[CsvRow]
    warnings: list[str] = field(default_factory=list)


def normalise_column(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


# A spreadsheet runs a cell starting with one of these as a formula (CSV injection). The export prefixes such
# cells with a quote; the reader takes that quote off again, so an exported catalogue re-imports unchanged.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_UTF_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: its BOM starts with UTF-16 LE's
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


_QUOTED = ("'", *FORMULA_STARTS)


def spreadsheet_safe(value: str) -> str:
    """The cell as a spreadsheet shows it without running it: a leading quote before a formula start (and
    before a quote already there, so the reader's unquoting gives back exactly the value)."""
    return f"'{value}" if value.startswith(_QUOTED) else value


def _spreadsheet_unquoted(value: str) -> str:
    return value[1:] if value[:1] == "'" and value[1:].startswith(_QUOTED) else value


def _decode(raw: bytes, path: Path) -> tuple[str, list[str]]:
    """UTF-8 (with or without BOM), UTF-16/32 with a BOM (Excel's "Unicode text"); a file with no valid
    multi-byte UTF-8 at all is taken as cp1252.

    A mostly-UTF-8 file with a few bad bytes stays UTF-8: its bad bytes become lone surrogates, and the
    rows holding them are reported one by one instead of mis-decoding every accent in the file.
    """
    if raw.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):
        raise CatalogueError(
            f"{path.name} is a spreadsheet workbook (.xlsx, .ods or .xls), not CSV: save it as CSV UTF-8"
        )
    for bom, codec in _UTF_BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(codec), []
            except UnicodeDecodeError as exc:
                raise CatalogueError(f"{path.name} starts like {codec.upper()} but is not: {exc}") from exc
    if raw.count(b"\x00") > len(raw) // 8:
        # cp1252 would "read" it, as a NUL between every letter.
        raise CatalogueError(
            f"{path.name} is not a text CSV in a supported encoding (it is full of NUL bytes: UTF-16 "
            "without a byte-order mark, or a spreadsheet file?). Save it as CSV UTF-8."
        )
    try:
        return raw.decode("utf-8-sig"), []
    except UnicodeDecodeError:
        pass
    text = raw.decode("utf-8-sig", errors="surrogateescape")
    has_utf8 = any(ord(ch) > 127 and not 0xDC80 <= ord(ch) <= 0xDCFF for ch in text)
    if not has_utf8:
        try:
            return raw.decode("cp1252"), [f"{path.name} is not UTF-8; read it as Windows-1252 (cp1252)"]
        except UnicodeDecodeError:
            pass
    return text, [f"{path.name} has bytes that are not valid UTF-8; rows holding them are skipped"]


def _has_bad_bytes(values: list[str]) -> bool:
    return any(0xDC80 <= ord(ch) <= 0xDCFF for v in values for ch in v)


class CsvStream:
    """A catalogue CSV read record by record, so a large file (NGA's objects.csv) is never held as rows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise CatalogueError(f"cannot read {path}: {exc}") from exc
        text, self.warnings = _decode(raw, path)
        # The header decides the separator: csv.Sniffer guesses from the data and is fooled by ';' inside
        # ICONCLASS or artist lists.
        first_line = text.split("\n", 1)[0]
        delimiter = max(",;\t", key=first_line.count)
        self._reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        try:
            header = next(self._reader)
        except StopIteration as exc:
            raise CatalogueError(f"{path.name} is empty") from exc
        except csv.Error as exc:
            raise CatalogueError(f"{path.name}: cannot read the header: {exc}") from exc
        self.columns = [normalise_column(c) for c in header]
        if not any(self.columns):
            raise CatalogueError(f"{path.name} has no column names on its first line")
        twice = sorted(c for c, n in Counter(c for c in self.columns if c).items() if n > 1)
        if twice:
            raise CatalogueError(
                f"{path.name} names the column(s) {', '.join(map(repr, twice))} more than once: "
                "which one holds the value would be a guess"
            )
        # csv reads an unclosed quote to the end of the file, as one cell holding every later row; a
        # well-formed file has an even number of quote characters.
        self._unbalanced_quotes = text.count('"') % 2 == 1
        if _has_bad_bytes(self.columns):
            raise CatalogueError(f"{path.name}: the header line is not valid text in any supported encoding")

    def __iter__(self) -> Iterator[CsvRow]:
        pending: CsvRow | None = None  # held back one record: only the last can have swallowed the file
        for row in self._records():
            if pending is not None:
                yield pending
            pending = row
        if pending is not None:
            end = self._reader.line_num
            if self._unbalanced_quotes and end > pending.line:
                pending = CsvRow(
                    line=pending.line,
                    values={},
                    error=f"a quote opened here is never closed: lines {pending.line}-{end} were read as "
                    "one record (nothing after it was imported)",
                )
            yield pending

    def _records(self) -> Iterator[CsvRow]:
        reader, columns = self._reader, self.columns
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield CsvRow(line=start, values={}, error=f"malformed CSV: {exc}")
                continue
            if not any(c.strip() for c in cells):
                continue  # blank lines are not records
            if _has_bad_bytes(cells):
                yield CsvRow(line=start, values={}, error="bad encoding (bytes that are not UTF-8)")
            elif any("\x00" in c for c in cells):
                yield CsvRow(
                    line=start, values={}, error="a cell holds a NUL character, which cannot be stored"
                )
            elif len(cells) != len(columns):
                error = f"expected {len(columns)} columns, found {len(cells)} (an unquoted separator?)"
                yield CsvRow(line=start, values={}, error=error)
            else:
                values = {
                    c: _spreadsheet_unquoted(v.strip()) for c, v in zip(columns, cells, strict=True) if c
                }
                yield CsvRow(line=start, values=values)


def read_csv(path: Path) -> CsvTable:
    stream = CsvStream(path)
    return CsvTable(path=path, columns=stream.columns, rows=list(stream), warnings=stream.warnings)


# Our field <- the column names catalogues use for it, in order of preference.
TEXT_COLUMNS: dict[str, tuple[str, ...]] = {
    "title": ("title",),
    "display_date": ("display_date", "date", "displaydate", "date_display"),
    "medium": ("medium", "medium_display", "technique"),
    "classification": ("classification", "object_type", "type"),
    "collection": ("collection", "repository"),
    "dimensions": ("dimensions",),
    "description": ("description",),
    "credit_line": ("credit_line", "creditline"),
    "licence": ("licence", "license", "rights"),
    "source_url": ("source_url", "url"),
    "iiif_url": ("iiif_url", "iiifurl"),
    "image_url": ("image_url",),
    "accession_number": ("accession_number", "accessionnum", "accession_no", "object_number"),
}
ARTIST_COLUMNS = ("artists", "artist", "attribution", "artist_display")
BEGIN_COLUMNS = ("begin_year", "date_begin", "beginyear", "year_begin", "start_year")
END_COLUMNS = ("end_year", "date_end", "endyear", "year_end")
ICONCLASS_COLUMNS = ("iconclass",)
URL_FIELDS = ("source_url", "iiif_url", "image_url")
_url_ok = URLValidator(schemes=["http", "https"])


def _first(values: dict[str, str], names: tuple[str, ...]) -> tuple[str, str]:
    for name in names:
        if name in values:
            return name, values[name]
    return "", ""


def _year(value: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    try:
        return int(float(value))
    except ValueError as exc:
        raise ValueError(f"not a year: {value!r}") from exc


def row_to_data(
    values: dict[str, str], *, source: str, source_id: str, skip_columns: frozenset[str] = frozenset()
) -> tuple[ArtworkData, list[str]]:
    """Map a CSV row onto ArtworkData. Unmapped, non-empty columns go to ``extra`` so nothing is lost.

    Raises ValueError for values that cannot be stored (a year that is not a number).
    """
    data = ArtworkData(source=source, source_id=source_id)
    warnings: list[str] = []
    used: set[str] = set(skip_columns)
    for attr, names in TEXT_COLUMNS.items():
        column, value = _first(values, names)
        if column:
            used.add(column)
            setattr(data, attr, value)
    column, value = _first(values, ARTIST_COLUMNS)
    if column:
        used.add(column)
        data.artists = [" ".join(a.split()) for a in value.split(";") if a.strip()]
    column, value = _first(values, BEGIN_COLUMNS)
    if column:
        used.add(column)
        data.date_begin = _year(value)
    column, value = _first(values, END_COLUMNS)
    if column:
        used.add(column)
        data.date_end = _year(value)
    column, value = _first(values, ICONCLASS_COLUMNS)
    if column:
        used.add(column)
        data.iconclass = split_notations(value)
    # A malformed link should not cost the whole record: keep its text in extra and say so.
    for attr in URL_FIELDS:
        url = getattr(data, attr)
        if url:
            try:
                _url_ok(url)
            except ValidationError:
                warnings.append(f"{attr} is not an http(s) URL, kept in extra: {url!r}")
                data.extra[attr] = url
                setattr(data, attr, "")
    for column, value in values.items():
        if column not in used and value:
            data.extra[column] = value
    return data, warnings
