"""A folder of images, optionally with a CSV catalogue keyed by id or by file name (``import_images``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from collections_app.importers.base import ImportItem
from collections_app.importers.catalogue import (
    CatalogueError,
    CsvTable,
    normalise_column,
    read_csv,
    row_to_data,
)
from collections_app.importers.images import find_images
from collections_app.services import ArtworkData

FILE_COLUMNS = ("file", "filename", "file_name", "image_file", "image", "path")
# Preferred key columns. A catalogue may also carry another system's id under "source_id" (art-dev's Wikidata
# Q numbers): when an "id" column exists, that one is ours and "source_id" is kept in extra.
ID_COLUMNS = ("id", "source_id")


@dataclass
class FolderPlan:
    items: list[ImportItem]
    notes: list[str] = field(default_factory=list)  # about the import as a whole, not one row


def _is_within(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


class _ImageIndex:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.paths = [p.resolve() for p in find_images(folder)]
        self.by_name: dict[str, list[Path]] = {}
        self.by_stem: dict[str, list[Path]] = {}
        for p in self.paths:
            self.by_name.setdefault(p.name.lower(), []).append(p)
            self.by_stem.setdefault(p.stem.lower(), []).append(p)

    def where(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.folder.resolve()))
        except ValueError:
            return str(path)


def _folder_only(
    paths: list[Path], index: _ImageIndex, source: str, taken: dict[str, str]
) -> list[ImportItem]:
    items = []
    for path in paths:
        where = index.where(path)
        source_id = path.stem
        if source_id in taken:
            items.append(
                ImportItem(where=where, error=f"duplicate id {source_id!r} (also {taken[source_id]})")
            )
            continue
        taken[source_id] = where
        items.append(
            ImportItem(where=where, data=ArtworkData(source=source, source_id=source_id), image_path=path)
        )
    return items


def _key_column(table: CsvTable, id_column: str | None) -> tuple[str, str]:
    """(key column, file column); either may be the same column, file column may be ''."""
    file_column = next((c for c in FILE_COLUMNS if c in table.columns), "")
    if id_column:
        key = normalise_column(id_column)
        if key not in table.columns:
            raise CatalogueError(
                f"{table.path.name} has no column {id_column!r}; its columns are: {', '.join(table.columns)}"
            )
        return key, file_column
    key = next((c for c in ID_COLUMNS if c in table.columns), "") or file_column
    if not key:
        raise CatalogueError(
            f"{table.path.name} needs a key column: 'id' or 'source_id' (or name one with --id-column), "
            f"or a file column ({', '.join(FILE_COLUMNS)}); its columns are: {', '.join(table.columns)}"
        )
    return key, file_column


def plan_folder_import(
    folder: Path,
    *,
    catalog: Path | None = None,
    source: str = "local",
    id_column: str | None = None,
    include_uncatalogued: bool = False,
) -> FolderPlan:
    """What ``import_images`` will do: one item per catalogue row (or per image without one), or its error.

    With a catalogue, the catalogue defines the records: images it does not mention are listed, and imported
    under their file name only with ``include_uncatalogued``, since a row that failed to parse would
    otherwise come back as a bare image under a guessed id.
    """
    if not folder.is_dir():
        raise CatalogueError(f"{folder} is not a folder")
    index = _ImageIndex(folder)
    taken: dict[str, str] = {}  # source_id -> where it was first seen
    if catalog is None:
        return FolderPlan(items=_folder_only(index.paths, index, source, taken))

    table = read_csv(catalog)
    key, file_column = _key_column(table, id_column)
    roots = [folder.resolve(), catalog.resolve().parent]
    name = catalog.name
    items: list[ImportItem] = []
    used: set[Path] = set()
    for row in table.rows:
        where = f"{name} line {row.line}"
        if row.error:
            items.append(ImportItem(where=where, error=row.error))
            continue
        key_value = row.values.get(key, "")
        if not key_value:
            items.append(ImportItem(where=where, error=f"empty {key!r}"))
            continue
        source_id = Path(key_value).stem if key == file_column else key_value
        if source_id in taken:
            items.append(
                ImportItem(where=where, error=f"duplicate id {source_id!r} (first on {taken[source_id]})")
            )
            continue
        taken[source_id] = where

        image, missing = _match_image(
            row.values.get(file_column, "") if file_column else "", source_id, index, roots
        )
        try:
            data, warnings = row_to_data(
                row.values, source=source, source_id=source_id, skip_columns=frozenset({key, file_column})
            )
        except ValueError as exc:
            items.append(ImportItem(where=where, error=str(exc)))
            continue
        if image is not None:
            used.add(image)
        if image is None and not (data.iiif_url or data.image_url):
            items.append(ImportItem(where=where, error=missing))
            continue
        items.append(ImportItem(where=where, data=data, image_path=image, warnings=warnings))

    notes = [f"{name}: {w}" for w in table.warnings]
    rest = [p for p in index.paths if p not in used]
    if rest and include_uncatalogued:
        items.extend(_folder_only(rest, index, source, taken))
        notes.append(
            f"{len(rest)} image(s) in the folder have no catalogue row: imported with their file name as id"
        )
    elif rest:
        names = ", ".join(index.where(p) for p in rest[:5]) + (", ..." if len(rest) > 5 else "")
        notes.append(
            f"{len(rest)} image(s) in the folder have no catalogue row and were not imported "
            f"(--include-uncatalogued imports them): {names}"
        )
    return FolderPlan(items=items, notes=notes)


def _match_image(
    file_value: str, source_id: str, index: _ImageIndex, roots: list[Path]
) -> tuple[Path | None, str]:
    """The image a row names (by its file column, else by its id as the file stem), or why there is none."""
    if file_value:
        for root in roots:
            candidate = (root / file_value).resolve()
            if candidate.is_file():
                if not _is_within(candidate, roots):
                    return None, f"image file {file_value!r} lies outside the import folder"
                return candidate, ""
        by_name = index.by_name.get(Path(file_value).name.lower(), [])
        if len(by_name) == 1:
            return by_name[0], ""
        if len(by_name) > 1:
            return None, f"image file {file_value!r} is ambiguous: {len(by_name)} files have that name"
        return None, f"image file not found: {file_value!r}"
    by_stem = index.by_stem.get(source_id.lower(), [])
    if len(by_stem) == 1:
        return by_stem[0], ""
    if len(by_stem) > 1:
        return None, f"{len(by_stem)} images are named {source_id!r}: {', '.join(p.name for p in by_stem)}"
    return None, f"no image named {source_id}.* in the folder"
