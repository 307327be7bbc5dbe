"""Fit the offline detector's context prior on art-dev's boxes (workers/inference/offline/context.py).

    python manage.py train_context                       # writes $SEMART_MODEL_DIR/offline-context.npz
    # the prior shipped with the code:
    python manage.py train_context --out workers/inference/offline/assets/context.npz

It learns where each phrase's boxes sit (in the picture, and from the nearest face the face finder sees)
on the pictures the active projection head was trained on, and reports, on the head's held-out pictures,
how often the window the detector places then hits a box against the placer alone. A prior written to
$SEMART_MODEL_DIR is used by this installation's detector in place of the shipped one; its version is part
of the detector's model_key, so ``reprocess`` places again. The phrases are those chosen by
benchmarks/context_prior.py (``--phrases`` for others).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from workers.inference.offline import context
from workers.inference.offline.training import add_dataset_argument


class Command(BaseCommand):
    help = "Fit the offline detector's context prior (where things usually sit); report held-out hits."

    def add_arguments(self, parser: CommandParser) -> None:
        add_dataset_argument(parser)
        parser.add_argument(
            "--out", type=Path, default=None, help=f"Default: $SEMART_MODEL_DIR/{context.LOCAL_CONTEXT_NAME}"
        )
        parser.add_argument(
            "--phrases",
            nargs="+",
            default=list(context.CONTEXT_PHRASES),
            help=f"Detector phrases to learn (default: {', '.join(context.CONTEXT_PHRASES)}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from PIL import Image

        from workers.inference.offline.detector import OfflineDetector
        from workers.inference.offline.localiser import box_iou, logit
        from workers.inference.offline.training import read_art_dev, readable_label

        dataset: Path = options["dataset"]
        if not (dataset / "metadata.jsonl").is_file():
            raise CommandError(f"{dataset} has no metadata.jsonl")
        detector = OfflineDetector(device="cpu", model_dir=Path(settings.SEMART_MODEL_DIR), context_path="")
        placer = detector.placer
        if placer is None:
            raise CommandError(
                "the context prior works with the offline detector's placer, and none was found"
            )
        unknown = sorted(set(options["phrases"]) - set(placer.phrases))
        if unknown:
            raise CommandError(f"not phrases the placer places: {', '.join(unknown)}")
        detector.faces.load()
        phrases = set(options["phrases"])
        trained_on = set(detector.embedder.head.train_ids)
        pictures = []
        for picture in read_art_dev(dataset):
            boxes = [(box, readable_label(label)) for box, label in picture.boxes]
            boxes = [(box, phrase) for box, phrase in boxes if phrase in phrases]
            if boxes:
                with Image.open(picture.path) as image:
                    rgb = image.convert("RGB")
                pictures.append((picture.id, rgb, boxes))
        train = [p for p in pictures if p[0] in trained_on]
        held = [p for p in pictures if p[0] not in trained_on]
        if not train:
            raise CommandError("no picture with a box of these phrases is among the head's training pictures")
        faces = {picture_id: detector.placement_faces(rgb) for picture_id, rgb, _ in pictures}
        fitted = context.fit(
            [(i, rgb.size, boxes) for i, rgb, boxes in train], sorted(phrases), faces.__getitem__
        )
        hits = {phrase: {"pictures": 0, "placer": 0, "placer_and_prior": 0} for phrase in sorted(phrases)}
        for picture_id, rgb, boxes in held:
            windows, _, placed = detector.scored_windows(rgb, placer)
            windows_array = np.asarray(windows)
            for phrase in {phrase for _, phrase in boxes}:
                truths = np.asarray([box for box, p in boxes if p == phrase])
                column = placed[:, placer.phrases.index(phrase)]
                with_prior = fitted.rank(phrase, column, windows_array, rgb.size, faces[picture_id])
                counts = hits[phrase]
                counts["pictures"] += 1
                for name, ranked in (("placer", logit(column)), ("placer_and_prior", with_prior)):
                    counts[name] += int(box_iou(windows[int(np.argmax(ranked))], truths).max() >= 0.3)
        fitted.metadata["held_out_hits"] = hits
        fitted.metadata["placer"] = placer.version  # what its phrases and weight were chosen beside
        out: Path = options["out"] or Path(settings.SEMART_MODEL_DIR) / context.LOCAL_CONTEXT_NAME
        fitted.save(out)
        summary = {
            "out": str(out),
            "version": fitted.version,
            "train_pictures": len(train),
            "held_out_hits": hits,
        }
        self.stdout.write(json.dumps(summary))
