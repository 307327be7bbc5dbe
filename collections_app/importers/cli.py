"""What every import command shares: the processing options, the report, ``--wait`` and the exit status."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from collections_app.importers.base import ImportItem, ImportReport, run_import
from collections_app.importers.waiting import wait_for_processing

MAX_LISTED = 50  # row errors printed in full; the rest are counted


class ImportCommand(BaseCommand):
    def add_import_arguments(self, parser: CommandParser, *, default_source: str) -> None:
        parser.add_argument(
            "--source", default=default_source, help=f"Source name (default {default_source!r})."
        )
        parser.add_argument(
            "--process",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="Queue the vision pipeline for new or changed artworks (default: SEMART_PROCESS_ON_SAVE).",
        )
        parser.add_argument(
            "--wait", action="store_true", help="Block until the imported artworks are processed or failed."
        )
        parser.add_argument(
            "--timeout", type=float, default=None, help="Give up waiting after this many seconds."
        )
        parser.add_argument("--poll", type=float, default=2.0, help=argparse.SUPPRESS)
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")

    def import_and_report(
        self, items: list[ImportItem], options: dict[str, Any], *, notes: list[str]
    ) -> ImportReport:
        process = options["process"]
        if options["wait"] and process is False:
            raise CommandError("--wait waits for processing: it cannot be combined with --no-process.")
        if process is None:
            process = options["wait"] or settings.SEMART_PROCESS_ON_SAVE
        for note in notes:
            self.stderr.write(self.style.WARNING(f"warning: {note}"))
        if not items:
            raise CommandError("Nothing to import: no records found.")
        report = run_import(
            items, total=len(items), process=process, progress=not options["no_progress"], stream=sys.stderr
        )
        self._print_report(report)
        if report.imported == 0:
            raise CommandError(f"Nothing could be imported ({report.failed} failed).")
        if report.fatal:
            raise CommandError(report.fatal)
        if options["wait"]:
            self._wait(
                report,
                timeout_s=options["timeout"],
                poll_s=options["poll"],
                progress=not options["no_progress"],
            )
        return report

    def _print_report(self, report: ImportReport) -> None:
        for warning in report.warnings[:MAX_LISTED]:
            self.stderr.write(self.style.WARNING(f"warning: {warning}"))
        if len(report.warnings) > MAX_LISTED:
            self.stderr.write(
                self.style.WARNING(f"... and {len(report.warnings) - MAX_LISTED} more warnings")
            )
        for error in report.errors[:MAX_LISTED]:
            self.stderr.write(self.style.ERROR(f"failed: {error}"))
        if len(report.errors) > MAX_LISTED:
            self.stderr.write(self.style.ERROR(f"... and {len(report.errors) - MAX_LISTED} more failed rows"))
        style = self.style.SUCCESS if not report.failed else self.style.WARNING
        self.stdout.write(style(f"Import finished: {report.summary()}."))

    def _wait(self, report: ImportReport, *, timeout_s: float | None, poll_s: float, progress: bool) -> None:
        from tqdm import tqdm

        ids = report.artwork_ids
        bar = tqdm(total=len(ids), desc="processing", unit="artwork", file=sys.stderr, disable=not progress)

        def show(done: int, failed: int) -> None:
            bar.n = done
            bar.set_postfix(failed=failed)
            bar.refresh()

        try:
            outcome = wait_for_processing(
                artwork_ids=ids, timeout_s=timeout_s, poll_s=poll_s, on_progress=show
            )
        finally:
            bar.close()
        self.stdout.write(
            f"Processing: {outcome.processed} processed, {len(outcome.failed)} failed, "
            f"{outcome.unfinished} unfinished."
        )
        for failure in outcome.failed:
            self.stderr.write(self.style.ERROR(f"processing failed: {failure}"))
        if outcome.timed_out:
            raise CommandError(
                f"Timed out after {timeout_s} s with {outcome.unfinished} artwork(s) unfinished."
            )
        if outcome.failed:
            raise CommandError(f"{len(outcome.failed)} artwork(s) failed processing.")
