"""The import loop every importer shares: validate, upsert, count, report. A bad row never stops the rest."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from django.core.exceptions import ValidationError
from django.db import DataError, IntegrityError

from collections_app.importers.images import ImageRejected, read_image_file
from collections_app.models import Artwork, ProcessingStatus
from collections_app.services import ArtworkData, artwork_queue_processing, artwork_upsert


@dataclass
class RowError:
    where: str  # "catalog.csv line 7" or a file path: what a cataloger needs to find the row
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class ImportItem:
    """One record as an importer read it, or the reason it could not be read."""

    where: str
    data: ArtworkData | None = None
    image_path: Path | None = None
    error: str = ""
    warnings: list[str] = field(default_factory=list)


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    errors: list[RowError] = field(default_factory=list)
    warnings: list[RowError] = field(default_factory=list)
    artwork_ids: list[int] = field(default_factory=list)
    queued: int = 0
    # A problem with the run as a whole (e.g. processing could not be queued), as opposed to one row.
    fatal: str = ""

    @property
    def imported(self) -> int:
        return self.created + self.updated + self.unchanged

    def summary(self) -> str:
        text = f"created {self.created}, updated {self.updated}, unchanged {self.unchanged}"
        text += f", failed {self.failed}"
        if self.queued:
            text += f"; {self.queued} queued for processing"
        return text


def _snapshot(artwork: Artwork | None) -> tuple[Any, ...] | None:
    """What an import can change, to tell "updated" from "unchanged" (save() always bumps updated_at)."""
    if artwork is None:
        return None
    fields = tuple(
        getattr(artwork, f.attname)
        for f in Artwork._meta.concrete_fields
        if f.attname not in ("updated_at", "created_at", "image")
    )
    artists = tuple(sorted(artwork.artists.values_list("name", flat=True)))
    return (*fields, artists)


def _existing(data: ArtworkData) -> Artwork | None:
    return Artwork.objects.filter(source=data.source, source_id=data.source_id).first()


def _error_text(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        if hasattr(exc, "error_dict"):
            return "; ".join(f"{k}: {' '.join(str(m) for m in v)}" for k, v in exc.message_dict.items())
        return " ".join(exc.messages)
    if isinstance(exc, ImageRejected):
        return str(exc)
    return f"{type(exc).__name__}: {exc}".strip()


def run_import(
    items: Iterable[ImportItem],
    *,
    total: int | None = None,
    process: bool = False,
    progress: bool = True,
    stream: TextIO | None = None,
    label: str = "importing",
) -> ImportReport:
    """Write every item through ``artwork_upsert``; collect counts, row errors and warnings.

    Processing is queued once at the end rather than row by row: an artwork whose image is unchanged but
    which never finished processing (an earlier ``--no-process`` import, a failure) is queued again too.
    """
    from tqdm import tqdm

    report = ImportReport()
    to_queue: dict[int, bool] = {}  # artwork id -> force recompute (its image changed)
    bar = tqdm(items, total=total, desc=label, unit="item", file=stream or sys.stderr, disable=not progress)
    for item in bar:
        report.warnings.extend(RowError(item.where, w) for w in item.warnings)
        if item.error or item.data is None:
            report.failed += 1
            report.errors.append(RowError(item.where, item.error or "no record"))
            continue
        try:
            # artwork_upsert validates the bytes, and only when they differ from the stored image.
            image_bytes = read_image_file(item.image_path) if item.image_path else None
            before = _snapshot(_existing(item.data))
            result = artwork_upsert(
                data=item.data,
                image_bytes=image_bytes,
                image_name=item.image_path.name if item.image_path else "",
                queue_processing=False,
            )
        # A row's own problems fail the row; a lost database connection (OperationalError) ends the import.
        except (ImageRejected, ValidationError, IntegrityError, DataError, OSError) as exc:
            report.failed += 1
            report.errors.append(RowError(item.where, _error_text(exc)))
            continue
        report.warnings.extend(RowError(item.where, w) for w in result.warnings)
        artwork = result.artwork
        report.artwork_ids.append(artwork.pk)
        if result.created:
            report.created += 1
        elif _snapshot(artwork) != before:
            report.updated += 1
        else:
            report.unchanged += 1
        if artwork.has_image_source() and (
            result.image_changed or artwork.status in (ProcessingStatus.PENDING, ProcessingStatus.FAILED)
        ):
            to_queue[artwork.pk] = result.image_changed and not result.created
        bar.set_postfix(
            new=report.created, upd=report.updated, same=report.unchanged, bad=report.failed, refresh=False
        )
    bar.close()

    if process and to_queue:
        try:
            forced = [pk for pk, force in to_queue.items() if force]
            fresh = [pk for pk, force in to_queue.items() if not force]
            report.queued = (artwork_queue_processing(artwork_ids=forced, force=True) if forced else 0) + (
                artwork_queue_processing(artwork_ids=fresh, force=False) if fresh else 0
            )
        except Exception as exc:  # noqa: BLE001 - the rows are stored; say why processing did not start
            report.fatal = f"imported, but processing could not be queued: {_error_text(exc)}"
    return report
