"""Train the offline detector's localiser on art-dev's boxes (workers/inference/offline/localiser.py).

    python manage.py train_localiser                     # writes $SEMART_MODEL_DIR/offline-localiser.npz
    # the localiser shipped with the code:
    python manage.py train_localiser --out workers/inference/offline/assets/localiser.npz

It learns from the pictures the active projection head was trained on, and reports region hit on the
head's held-out pictures (never seen by either). A localiser written to $SEMART_MODEL_DIR is used by this
installation's detector in place of the shipped one; its version is part of the detector's model_key, so
the pipeline finds the details again. ``--loss`` chooses how it learns (docs/models.md compares the two).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from workers.inference.offline import localiser
from workers.inference.offline.detector import LOCAL_LOCALISER_NAME
from workers.inference.offline.training import add_dataset_argument


class Command(BaseCommand):
    help = "Train the offline detector's localiser (which windows sit on a thing); report held-out hits."

    def add_arguments(self, parser: CommandParser) -> None:
        add_dataset_argument(parser)
        parser.add_argument(
            "--out", type=Path, default=None, help=f"Default: $SEMART_MODEL_DIR/{LOCAL_LOCALISER_NAME}"
        )
        parser.add_argument(
            "--loss",
            choices=localiser.LOSSES,
            default="pointwise",
            help="pointwise (the shipped localiser) or listwise (the shipped placer: its top window hits "
            "more often, but the search ranked worse with its windows as details; train a placer with "
            "--out $SEMART_MODEL_DIR/offline-placer.npz; docs/models.md).",
        )
        parser.add_argument("--steps", type=int, default=300, help="Optimiser steps.")
        parser.add_argument("--limit", type=int, default=None, help="Use only N pictures (quick runs).")

    def handle(self, *args: Any, **options: Any) -> None:
        from workers.inference.offline.training import read_art_dev
        from workers.inference.registry import get_embedder

        dataset: Path = options["dataset"]
        if not (dataset / "metadata.jsonl").is_file():
            raise CommandError(f"{dataset} has no metadata.jsonl")
        head = getattr(get_embedder(), "head", None)
        if head is None:
            raise CommandError(
                "the localiser works with the offline embedder's head: "
                "set SEMART_EMBEDDER=offline-minilm-effnet"
            )
        pictures = [p for p in read_art_dev(dataset) if p.boxes]
        if options["limit"]:
            pictures = pictures[: options["limit"]]
        trained_on = set(head.train_ids)
        train = [p for p in pictures if p.id in trained_on]
        held = [p for p in pictures if p.id not in trained_on]
        if not train:
            raise CommandError("none of these pictures is among the head's training pictures")
        phrases = head.detector_phrases

        def progress(done: int, total: int) -> None:
            if done == total or done % 50 == 0:
                self.stderr.write(f"windows: {done}/{total} pictures")

        fitted = localiser.fit(
            localiser.window_set(train, head, phrases, progress=progress),
            phrases,
            head_version=head.version,
            loss=options["loss"],
            steps=options["steps"],
        )
        fitted.train_ids = [p.id for p in train]
        metrics: dict[str, Any] = {"train_pictures": len(train), "held_out_pictures": len(held)}
        if held:
            held_set = localiser.window_set(held, head, fitted.phrases, progress=progress)
            metrics["held_out_region_hit"] = localiser.region_hit(fitted, held_set)
        fitted.metadata["metrics"] = metrics
        out: Path = options["out"] or Path(settings.SEMART_MODEL_DIR) / LOCAL_LOCALISER_NAME
        fitted.save(out)
        summary = {"out": str(out), "version": fitted.version, "phrases": len(fitted.phrases), **metrics}
        self.stdout.write(json.dumps(summary))
