"""The localiser's two losses, measured the way docs/models.md quotes them. Prints JSON.

    .venv/bin/python benchmarks/localiser_losses.py select [--loss listwise] [--l2 0.03 0.1 ...]
    .venv/bin/python benchmarks/localiser_losses.py kept LOCALISER.npz [...]

``select``: the regularisation is chosen without the head's held-out pictures. The head's training
pictures with boxes are split (by a hash of their id) into three quarters to fit on and one to score: for
each loss and L2 weight, the top-window hit (``localiser.region_hit``) on that quarter.

``kept``: for each localiser file, the detector's choice replayed on every boxed picture (a label counts
when the head finds it, ``threshold``; its windows passing ``localiser_threshold``, NMS, at most
``per_phrase``, all as ``OfflineDetector`` sets them): windows kept a picture, the share of each window
size among them and among each label's top window, and the held-out top-window hit.

Run on a machine with art-dev; the window features take ~2 min (``kept``) and each fit ~10-60 s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "semart_site.settings.local")

from workers.inference.offline.training import add_dataset_argument  # noqa: E402 (after the path)


def scoring_quarter(image_id: str) -> bool:
    return hashlib.sha1(f"val{image_id}".encode()).digest()[0] < 64


def select(args: argparse.Namespace, head: Any, pictures: list[Any]) -> dict[str, Any]:
    from workers.inference.offline import localiser

    trained = [p for p in pictures if p.id in set(head.train_ids)]
    fit_on = [p for p in trained if not scoring_quarter(p.id)]
    scored = [p for p in trained if scoring_quarter(p.id)]
    phrases = head.detector_phrases
    fit_set = localiser.window_set(fit_on, head, phrases)
    scored_set = localiser.window_set(scored, head, phrases)
    results: dict[str, Any] = {"fit_pictures": len(fit_on), "scored_pictures": len(scored)}
    for loss in args.loss or localiser.LOSSES:
        for l2 in args.l2 or [localiser.DEFAULT_L2[loss]]:
            fitted = localiser.fit(
                fit_set, phrases, head_version=head.version, loss=loss, l2=l2, steps=args.steps
            )
            only_kept = scored_set.subset(columns=[phrases.index(p) for p in fitted.phrases])
            results[f"{loss}_l2_{l2}"] = localiser.region_hit(fitted, only_kept)
    return results


def kept(args: argparse.Namespace, head: Any, pictures: list[Any]) -> dict[str, Any]:
    from workers.inference.offline import localiser
    from workers.inference.offline.detector import OfflineDetector

    detector = OfflineDetector(device="cpu")  # only its settings are read
    results: dict[str, Any] = {}
    held = np.array([p.id not in set(head.train_ids) for p in pictures])
    for path in args.files:
        model = localiser.Localiser.load(path)
        data = localiser.window_set(pictures, head, model.phrases)
        counts: list[int] = []
        kept_sides: Counter[float] = Counter()
        top_sides: Counter[float] = Counter()
        for picture in np.unique(data.picture_of):
            rows = np.flatnonzero(data.picture_of == picture)
            windows = data.windows[rows]
            placed = 1 / (1 + np.exp(-model._logits(data.features[rows], data.contains[rows], windows)))
            present = 1 / (1 + np.exp(-data.contains[rows]))
            size_of = _slid_sides(windows)
            chosen = detector.chosen_windows(present, placed, windows)
            for _, kept_rows in chosen:
                kept_sides.update(size_of[i] for i in kept_rows)
                top_sides[size_of[kept_rows[0]]] += 1
            counts.append(sum(len(kept_rows) for _, kept_rows in chosen))
        held_set = data.subset(rows=held[data.picture_of])
        results[str(path)] = {
            "version": model.version,
            "loss": model.metadata.get("loss", "pointwise"),
            "windows_kept_per_picture": round(float(np.mean(counts)), 1),
            "kept_by_size": _shares(kept_sides),
            "top_window_by_size": _shares(top_sides),
            "held_out_top_window_hit": localiser.region_hit(model, held_set),
        }
    return results


def _slid_sides(windows: np.ndarray) -> list[float]:
    """Each of a picture's windows as the fraction of the shorter side it was slid at (WINDOW_SIDES, the
    largest first): a picture's windows of one size share one area."""
    from workers.inference.offline.localiser import WINDOW_SIDES

    areas = np.round(windows[:, 2] * windows[:, 3], 6)
    rank = {area: i for i, area in enumerate(sorted(set(areas.tolist()), reverse=True))}
    return [WINDOW_SIDES[min(rank[a], len(WINDOW_SIDES) - 1)] for a in areas.tolist()]


def _shares(counter: Counter[float]) -> dict[str, float]:
    total = max(sum(counter.values()), 1)
    return {str(side): round(count / total, 3) for side, count in sorted(counter.items(), reverse=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_argument(parser)
    parser.add_argument("--steps", type=int, default=300)
    parts = parser.add_subparsers(dest="part", required=True)
    choose = parts.add_parser("select", help="L2 per loss, scored on a quarter of the training pictures")
    choose.add_argument(
        "--loss", choices=("pointwise", "listwise"), nargs="+", default=None, help="Default: both."
    )
    choose.add_argument("--l2", type=float, nargs="+", default=None, help="Default: each loss's default.")
    replay = parts.add_parser("kept", help="the detector's choice replayed with these localiser files")
    replay.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args()

    import django

    django.setup()
    from workers.inference.offline.training import read_art_dev
    from workers.inference.registry import get_embedder

    head = getattr(get_embedder(), "head", None)
    if head is None:
        parser.error(
            "the localiser works with the offline embedder's head: set SEMART_EMBEDDER=offline-minilm-effnet"
        )
    pictures = [p for p in read_art_dev(args.dataset) if p.boxes]
    result = select(args, head, pictures) if args.part == "select" else kept(args, head, pictures)
    print(
        json.dumps(
            {"benchmark": "localiser_losses", "part": args.part, "head": head.version, **result}, indent=1
        )
    )


if __name__ == "__main__":
    main()
