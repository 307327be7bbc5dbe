"""Does the context prior (workers/inference/offline/context.py) place things better, and for which phrases?

    .venv/bin/python benchmarks/context_prior.py [--dataset DIR (art-dev)] [--cache FILE] [--shuffles 20]

Runs the offline detector's placer and face finder on every picture of the set with boxes (about 0.7 s a
picture on one core; ``--cache`` keeps what they gave, for a second run), then per phrase with at least
``--min-pictures`` training pictures (the head's ``train_ids``), a two-fold cross-validation inside the
training pictures, repeated ``--shuffles`` times: the prior is fitted on one half, and on the other half
the window with the highest placer logit + log prior is compared with the placer's own top window ("does
it hit a box of the phrase", IoU >= 0.3); where the detector places the phrase from a face or on a person
instead (``on``), that placement counts for both. A phrase is ``chosen`` when the mean gain exceeds its spread
over the folds (the rule CONTEXT_PHRASES was chosen by). Finally the prior is fitted on all training
pictures and both ways are counted on the held-out pictures, beside what the shipped detector places
(``shipped``: its ``place``, faces and people included). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workers.inference.offline import context  # noqa: E402 (after the path)
from workers.inference.offline.localiser import box_iou, logit  # noqa: E402

HIT_IOU = 0.3


def observe(dataset: Path) -> dict[str, Any]:
    """Per picture with boxes: size, boxes by phrase, the placer's windows and probabilities, the faces
    the detector would use, and what the shipped detector places."""
    from PIL import Image

    from workers.inference.offline.detector import OfflineDetector
    from workers.inference.offline.training import read_art_dev, readable_label

    detector = OfflineDetector(device="cpu", model_dir=None)
    detector.load()
    placer = detector.placer
    if placer is None:
        raise SystemExit("the detector has no placer")
    pictures = {}
    for n, picture in enumerate(p for p in read_art_dev(dataset) if p.boxes):
        with Image.open(picture.path) as image:
            rgb = image.convert("RGB")
        windows, _, placed = detector.scored_windows(rgb, placer)
        faces = detector.placement_faces(rgb)
        shipped = {r.label: (r.box, r.attributes["on"]) for r in detector.place(rgb, detector.detect(rgb))}
        boxes: dict[str, list[tuple[float, ...]]] = defaultdict(list)
        for box, label in picture.boxes:
            boxes[readable_label(label)].append(tuple(box))
        pictures[picture.id] = {
            "size": rgb.size,
            "boxes": dict(boxes),
            "windows": np.asarray(windows),
            "placed": placed,
            "faces": faces,
            "shipped": shipped,
        }
        if n % 50 == 0:
            print(f"observed {n} pictures", file=sys.stderr)
    return {
        "phrases": list(placer.phrases),
        "pictures": pictures,
        "train_ids": detector.embedder.head.train_ids,
    }


def hits(seen: dict[str, Any], phrase: str, ids: list[str], prior: context.ContextPrior | None) -> np.ndarray:
    """Per picture, whether the top window (placer logit, plus the log prior when given) hits; where the
    shipped detector placed the phrase from a face or on a person, that placement, either way (the prior
    only chooses among windows)."""
    column = seen["phrases"].index(phrase)
    out = []
    for picture_id in ids:
        picture = seen["pictures"][picture_id]
        box, on = picture["shipped"].get(phrase, (None, "window"))
        if on != "window":
            out.append(_hit(box, picture["boxes"][phrase]))
            continue
        placed = picture["placed"][:, column]
        score = (
            logit(placed)
            if prior is None
            else prior.rank(phrase, placed, picture["windows"], picture["size"], picture["faces"])
        )
        out.append(_hit(picture["windows"][int(np.argmax(score))], picture["boxes"][phrase]))
    return np.asarray(out, dtype=float)


def _hit(box: Any, truths: list[tuple[float, ...]]) -> bool:
    return bool(box is not None and box_iou(np.asarray(box), np.asarray(truths)).max() >= HIT_IOU)


def fit_on(seen: dict[str, Any], phrase: str, ids: list[str]) -> context.ContextPrior:
    pictures = seen["pictures"]
    return context.fit(
        [(i, pictures[i]["size"], [(b, phrase) for b in pictures[i]["boxes"][phrase]]) for i in ids],
        [phrase],
        lambda i: pictures[i]["faces"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=ROOT.parent / "shared" / "datasets" / "art-dev")
    parser.add_argument(
        "--cache", type=Path, default=None, help="Keep (or reuse) the detector's outputs here."
    )
    parser.add_argument("--shuffles", type=int, default=20)
    parser.add_argument("--min-pictures", type=int, default=6)
    args = parser.parse_args()

    if args.cache and args.cache.is_file():
        with args.cache.open("rb") as handle:
            seen = pickle.load(handle)
    else:
        seen = observe(args.dataset)
        if args.cache:
            with args.cache.open("wb") as handle:
                pickle.dump(seen, handle)
    trained = set(seen["train_ids"])
    rng = np.random.default_rng(0)
    report = {}
    for phrase in seen["phrases"]:
        having = [i for i, p in seen["pictures"].items() if phrase in p["boxes"]]
        train = [i for i in having if i in trained]
        held = [i for i in having if i not in trained]
        if len(train) < args.min_pictures:
            continue
        gains = []
        for _ in range(args.shuffles):
            order = list(rng.permutation(train))
            halves = order[: len(order) // 2], order[len(order) // 2 :]
            for fitted, tested in (halves, halves[::-1]):
                prior = fit_on(seen, phrase, fitted)
                gains.append(
                    hits(seen, phrase, tested, prior).mean() - hits(seen, phrase, tested, None).mean()
                )
        prior = fit_on(seen, phrase, train)
        shipped = [
            _hit(seen["pictures"][i]["shipped"].get(phrase, (None,))[0], seen["pictures"][i]["boxes"][phrase])
            for i in held
        ]
        report[phrase] = {
            "training_pictures": len(train),
            "held_out_pictures": len(held),
            "cv_gain": round(float(np.mean(gains)), 3),
            "cv_spread": round(float(np.std(gains)), 3),
            "chosen": bool(np.mean(gains) > np.std(gains)),
            "held_out_hits": {
                "windows": int(hits(seen, phrase, held, None).sum()),
                "windows_and_prior": int(hits(seen, phrase, held, prior).sum()),
                "shipped": int(sum(shipped)),
            },
        }
    chosen = sorted(p for p, r in report.items() if r["chosen"])
    print(
        json.dumps(
            {"phrases": report, "chosen": chosen, "shipped_phrases": list(context.CONTEXT_PHRASES)}, indent=1
        )
    )


if __name__ == "__main__":
    main()
