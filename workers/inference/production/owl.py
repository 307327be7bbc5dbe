"""OWLv2 as an open-vocabulary detector: it looks for each phrase of the vocabulary in the picture by name.

SAM finds outlines and the pipeline names them afterwards; OWLv2 is asked "where is a halo?" and answers with
boxes, which is what a detail query needs: its entities are found per phrase, and it **places** each phrase
it may see (``Detector.place``): the one box it puts most on the thing, which an artworks search then
outlines for a query naming it.

The picture is padded to a square (bottom and right, grey, as OWLv2 was trained), resized to the model's input
side and normalised, here with PIL and numpy (transformers' OWLv2 image processor needs scipy or
torchvision, which this project does not install). The model scores every patch's box against every
phrase ("a painting of a halo"); boxes come back relative to the padded square and are mapped back to the
picture. The phrases' token ids are made once; the last picture's scores are kept, so ``detect`` and
``place`` on one picture run the model once.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from workers.inference.base import Box, Detector, Region, image_key
from workers.inference.offline.detector import nms  # greedy NMS over relative xywh boxes, numpy only
from workers.inference.production.checkpoints import (
    checkpoint_settings,
    checkpoint_version,
    from_pretrained,
    model_from_pretrained,
    torch_device_and_dtype,
)
from workers.inference.vocabulary import prompt, region_labels

if TYPE_CHECKING:
    from PIL.Image import Image

PAD_GREY = 128  # OWLv2 pads with 0.5 after rescaling to 0..1
MIN_SIDE = 0.01  # a box side under this (of the picture) is a sliver or padding; the pipeline drops it too


class Owlv2Detector(Detector):
    """Google OWLv2 (default ``google/owlv2-base-patch16-ensemble``). Env: ``SEMART_OWLV2_CHECKPOINT``.

    Options: ``threshold`` (0.2: a box becomes an entity when its best phrase scores at least this),
    ``place_threshold`` (0.1: a phrase is placed when some box scores at least this), ``nms_iou`` (0.3, per
    phrase), ``per_label`` (5 boxes a phrase at most), ``max_regions`` (48). The vocabulary is
    ``workers.inference.vocabulary.region_labels()``; it is part of the version, so changing it finds the
    entities again.
    """

    key = "owlv2"
    default_checkpoint = "google/owlv2-base-patch16-ensemble"
    env_var = "SEMART_OWLV2_CHECKPOINT"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.options, self.checkpoint = checkpoint_settings(self)
        self.labels = tuple(self.options.get("labels") or region_labels())
        vocabulary = hashlib.sha256(json.dumps(list(self.labels)).encode()).hexdigest()[:8]
        self.version = f"{checkpoint_version(self.checkpoint)[:80]}+v{vocabulary}"
        self.threshold = float(self.options.get("threshold", 0.2))
        self.place_threshold = float(self.options.get("place_threshold", 0.1))
        self.nms_iou = float(self.options.get("nms_iou", 0.3))
        self.per_label = int(self.options.get("per_label", 5))
        self.max_regions = int(self.options.get("max_regions", 48))
        if not self.labels:
            raise ValueError("OWLv2 needs phrases to look for (SEMART_REGION_LABELS or the 'labels' option)")
        self._last: tuple[str, np.ndarray, np.ndarray] | None = None
        self._last_lock = threading.Lock()

    def _load(self) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, Owlv2ForObjectDetection

        self.torch_device, self.torch_dtype = torch_device_and_dtype(self.device_preference)
        model = model_from_pretrained(Owlv2ForObjectDetection, self.checkpoint, dtype=self.torch_dtype)
        self.model = model.to(self.torch_device).eval()
        processor = from_pretrained(AutoImageProcessor, self.checkpoint)  # only its size, mean and std
        self.side = int(processor.size["height"])
        self.mean = np.asarray(processor.image_mean, dtype=np.float32)
        self.std = np.asarray(processor.image_std, dtype=np.float32)
        tokenizer = from_pretrained(AutoTokenizer, self.checkpoint)
        tokens = tokenizer(
            [prompt(label) for label in self.labels],
            padding="max_length",
            truncation=True,
            max_length=int(self.model.config.text_config.max_position_embeddings),
            return_tensors="pt",
        )
        self.input_ids = tokens["input_ids"].to(self.torch_device)
        self.attention_mask = tokens["attention_mask"].to(self.torch_device)

    def pixels(self, image: Image) -> np.ndarray:
        """(3, side, side) float32: padded to a square at the bottom and right, resized, normalised."""
        from PIL import Image as PILImage

        rgb = image.convert("RGB")
        square = PILImage.new("RGB", (max(rgb.size),) * 2, (PAD_GREY,) * 3)
        square.paste(rgb, (0, 0))
        resized = square.resize((self.side, self.side), PILImage.Resampling.BILINEAR)
        array = np.asarray(resized, dtype=np.float32) / 255.0
        return ((array - self.mean) / self.std).transpose(2, 0, 1)

    def scores(self, image: Image) -> tuple[np.ndarray, np.ndarray]:
        """Every patch's box (n, 4: relative x, y, w, h in the picture, clipped; w or h 0 when the box
        lies in the padding) and its probability for each phrase (n, n_labels), 0 for a box that is not a
        place in the picture (a side under ``MIN_SIDE``)."""
        import torch

        self.load()
        key = image_key(image)
        with self._last_lock:
            if self._last is not None and self._last[0] == key:
                return self._last[1], self._last[2]
        pixel_values = torch.from_numpy(self.pixels(image))[None].to(self.torch_device, self.torch_dtype)
        with torch.inference_mode():
            out = self.model(
                input_ids=self.input_ids, attention_mask=self.attention_mask, pixel_values=pixel_values
            )
        boxes = image_boxes(out.pred_boxes[0].float().cpu().numpy(), image.size)
        usable = (boxes[:, 2] >= MIN_SIDE) & (boxes[:, 3] >= MIN_SIDE)
        probabilities = torch.sigmoid(out.logits[0].float()).cpu().numpy() * usable[:, None]
        with self._last_lock:
            self._last = (key, boxes, probabilities)
        return boxes, probabilities

    def _detect(self, image: Image) -> list[Region]:
        boxes, probabilities = self.scores(image)
        regions = []
        for j, label in enumerate(self.labels):
            members = np.flatnonzero(probabilities[:, j] >= max(self.threshold, 1e-9))
            if not len(members):
                continue
            for k in nms(boxes[members], probabilities[members, j], self.nms_iou)[: self.per_label]:
                i = int(members[k])
                regions.append(
                    Region(
                        box=_box(boxes[i]), label=label, confidence=float(probabilities[i, j]), source="owlv2"
                    )
                )
        regions.sort(key=lambda r: -r.confidence)
        return regions[: self.max_regions]

    def _place(self, image: Image, found: Sequence[Region]) -> list[Region]:
        boxes, probabilities = self.scores(image)
        placed = []
        for j in np.flatnonzero(probabilities.max(axis=0) >= max(self.place_threshold, 1e-9)):
            i = int(probabilities[:, j].argmax())
            placed.append(
                Region(
                    box=_box(boxes[i]),
                    label=self.labels[int(j)],
                    confidence=float(probabilities[i, j]),
                    source="placement",
                )
            )
        return placed


def image_boxes(centred: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """OWLv2's (n, 4) boxes, centre x, centre y, w, h relative to the padded square, as relative x, y, w, h
    in the picture of ``size`` (width, height), clipped to it (a box in the padding comes out empty)."""
    width, height = size
    side = float(max(width, height))
    cx, cy, w, h = (centred[:, k].astype(np.float64) for k in range(4))
    x1 = np.clip((cx - w / 2) * side / width, 0.0, 1.0)
    x2 = np.clip((cx + w / 2) * side / width, 0.0, 1.0)
    y1 = np.clip((cy - h / 2) * side / height, 0.0, 1.0)
    y2 = np.clip((cy + h / 2) * side / height, 0.0, 1.0)
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)


def _box(row: np.ndarray) -> Box:
    return (float(row[0]), float(row[1]), float(row[2]), float(row[3]))
